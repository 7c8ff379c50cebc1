/* C timing loop for benchmarks/aot.py: `timing REPEATS THREADS` runs MODEL_run REPEATS times on a
 * fixed input after a warm-up and prints the median milliseconds. Built as
 *     cc -O2 -DMODEL=<name> -include <name>.h aot_timing.c <name>.so
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define FN(f) CAT(MODEL, f)

static long elements(int (*shape)(int, int64_t *), int i) {
    int64_t dims[16];
    long n = 1;
    for (int k = 0, rank = shape(i, dims); k < rank; k++)
        n *= dims[k];
    return n;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int repeats = argc > 1 ? atoi(argv[1]) : 30;
    if (repeats < 1 || FN(num_inputs)() > 8 || FN(num_outputs)() > 8)
        return 2;
    FN(set_num_threads)(argc > 2 ? atoi(argv[2]) : 0);
    const float *inputs[8];
    float *outputs[8];
    for (int i = 0; i < FN(num_inputs)(); i++) {
        float *x = malloc(sizeof(float) * elements(FN(input_shape), i));
        for (long k = 0; k < elements(FN(input_shape), i); k++)
            x[k] = (float)((k * 7919) % 1000) / 500.0f - 1.0f;
        inputs[i] = x;
    }
    for (int i = 0; i < FN(num_outputs)(); i++)
        outputs[i] = malloc(sizeof(float) * elements(FN(output_shape), i));
    double *ms = malloc(sizeof(double) * repeats);
    for (int r = -3; r < repeats; r++) {                 /* three warm-up runs */
        struct timespec start, end;
        clock_gettime(CLOCK_MONOTONIC, &start);
        if (FN(run)(inputs, outputs) != 0) {
            fprintf(stderr, "%s\n", FN(last_error)());
            return 1;
        }
        clock_gettime(CLOCK_MONOTONIC, &end);
        if (r >= 0)
            ms[r] = (end.tv_sec - start.tv_sec) * 1e3 + (end.tv_nsec - start.tv_nsec) * 1e-6;
    }
    qsort(ms, repeats, sizeof(double), by_value);
    printf("%.3f\n", ms[repeats / 2]);
    return 0;
}
