"""`lucid.nn.functional`: PyTorch's functional API over lucid's operators.

These functions parse user arguments (ints or tuples, padding strings, unbatched inputs), validate
them with messages naming the function, and apply operators from `lucid.ir.ops`. One module per
family; every public name is re-exported here, as `torch.nn.functional` does.
"""
from .arguments import (batched, check_output_padding, check_padding_arg, conv_padding, conv_transpose_padding, ntuple,
                        require_tensor, unbatch)  # noqa: F401
from .conv import (conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d, conv_transpose3d)  # noqa: F401
from .pooling import (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d, adaptive_max_pool1d,
                      adaptive_max_pool2d, adaptive_max_pool3d, adaptive_output_size, avg_pool1d, avg_pool2d,
                      avg_pool3d, max_pool1d, max_pool2d, max_pool3d, pool_args)  # noqa: F401
from .activation import (SELU_ALPHA, SELU_SCALE, celu, elu, gelu, hardsigmoid, hardswish, hardtanh, leaky_relu,
                         log_softmax, mish, prelu, relu, relu6, selu, sigmoid, silu, softmax, softplus, tanh)  # noqa: F401
from .linear import (flatten, linear)  # noqa: F401
from .dropout import (alpha_dropout, check_probability, dropout, dropout1d, dropout2d, dropout3d,
                      feature_alpha_dropout)  # noqa: F401
from .normalization import (assign_state, batch_norm, group_norm, instance_norm, layer_norm,
                            local_response_norm)  # noqa: F401
from .padding import (PAD_MODES, pad)  # noqa: F401
from .resampling import (INTERPOLATE_RANKS, interpolate, pixel_shuffle, pixel_unshuffle, upsample)  # noqa: F401
from .loss import (binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, l1_loss, mse_loss,
                   nll_loss, smooth_l1_loss)  # noqa: F401
