/* Run the exported 3-D UNet from C: `make run` (see README.md here).
 *
 * Fills the input with a fixed pattern, runs unet_run, prints the output's shape and checksum (the sum
 * of its elements), then the library's self-test. Everything it needs is in unet.h and unet.so.
 */
#include <stdio.h>
#include <stdlib.h>

#include "unet.h"

int main(void) {
    float *input = malloc(sizeof(float) * UNET_INPUT0_ELEMENTS);
    float *output = malloc(sizeof(float) * UNET_OUTPUT0_ELEMENTS);
    if (!input || !output)
        return 1;
    for (long i = 0; i < UNET_INPUT0_ELEMENTS; i++)
        input[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;

    const float *inputs[] = {input};
    float *outputs[] = {output};
    if (unet_run(inputs, outputs) != 0) {
        fprintf(stderr, "unet_run failed: %s\n", unet_last_error());
        return 1;
    }
    int64_t dims[8];
    int rank = unet_output_shape(0, dims);
    printf("output shape:");
    for (int k = 0; k < rank; k++)
        printf(" %lld", (long long)dims[k]);
    double checksum = 0;
    for (long i = 0; i < UNET_OUTPUT0_ELEMENTS; i++)
        checksum += output[i];
    printf("\nchecksum: %.6f\n", checksum);

    int selftest = unet_selftest();
    printf("selftest: %s\n", selftest == 0 ? "passed" : unet_last_error());
    free(input);
    free(output);
    return selftest == 0 ? 0 : 1;
}
