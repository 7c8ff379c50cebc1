/* Test program for a library of symbolic dimensions written by lucid.export
 * (tests/aot/test_export_dynamic.py), built as
 *     cc -DMODEL=<name> -include <name>.h run_dims.c <name>.so
 * `run_dims INPUTS.bin OUTPUTS.bin SIZE...` takes the inputs' shapes (every input's shape,
 * concatenated: MODEL_INPUT_DIMS sizes), reads every input (float32, concatenated), asks the library
 * for the outputs' shapes (MODEL_output_shape_dims), runs MODEL_run_dims and writes every output
 * the same way; it prints "ok" and each output's shape. When the library refuses the shapes, it still
 * calls MODEL_run_dims (with one-float outputs, which a refused call must not touch) and prints
 * "refused <code>: <message>" of that call (exit 1). `run_dims` alone runs MODEL_selftest and prints "ok".
 */
#include <stdio.h>
#include <stdlib.h>

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define FN(f) CAT(MODEL, f)
#define MAX_ARRAYS 8
#define MAX_RANK 8

static long elements(const int64_t *dims, int rank) {
    long n = 1;
    for (int k = 0; k < rank; k++)
        n *= dims[k];
    return n;
}

static int refused(int code) {
    printf("refused %d: %s\n", code, FN(last_error)());
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 1) {
        int code = FN(selftest)();
        return code ? refused(code) : (printf("ok\n"), 0);
    }
    int input_dims = 0;
    for (int i = 0; i < FN(num_inputs)(); i++)
        input_dims += FN(input_shape)(i, NULL);
    if (argc != 3 + input_dims || FN(num_inputs)() > MAX_ARRAYS || FN(num_outputs)() > MAX_ARRAYS)
        return 2;
    int64_t shapes[MAX_ARRAYS * MAX_RANK];
    for (int k = 0; k < input_dims; k++)
        shapes[k] = atoll(argv[3 + k]);
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    const float *inputs[MAX_ARRAYS];
    float *outputs[MAX_ARRAYS];
    int64_t output_dims[MAX_ARRAYS][MAX_RANK];
    int output_rank[MAX_ARRAYS];
    for (int i = 0, first = 0; i < FN(num_inputs)(); i++) {
        int rank = FN(input_shape)(i, NULL);
        long n = elements(shapes + first, rank);
        float *data = malloc(sizeof(float) * (n + 1));
        if (!in || fread(data, sizeof(float), n, in) != (size_t)n)
            return 2;
        inputs[i] = data;
        first += rank;
    }
    for (int i = 0; i < FN(num_outputs)(); i++) {
        output_rank[i] = FN(output_shape_dims)(shapes, i, output_dims[i]);
        outputs[i] = malloc(sizeof(float) * (output_rank[i] < 0 ? 1 : elements(output_dims[i], output_rank[i]) + 1));
    }
    int code = FN(run_dims)(shapes, inputs, outputs);
    if (code != 0)
        return refused(code);
    printf("ok");
    for (int i = 0; i < FN(num_outputs)(); i++) {
        long n = elements(output_dims[i], output_rank[i]);
        if (!out || fwrite(outputs[i], sizeof(float), n, out) != (size_t)n)
            return 2;
        for (int k = 0; k < output_rank[i]; k++)
            printf("%s%lld", k ? "," : " ", (long long)output_dims[i][k]);
    }
    printf("\n");
    fclose(out);
    return 0;
}
