/* Test harness for a library written by lucid.export (tests/test_export.py), built as
 *     cc -DMODEL=<name> -include <name>.h aot_harness.c <name>.so -lpthread
 * `harness INPUTS.bin OUTPUTS.bin` reads every input (float32, concatenated, sizes from the library's
 * shape functions), runs MODEL_run, and writes every output the same way. It then runs two threads at
 * once, each calling MODEL_run REPEATS times (one on the inputs, one on the inputs negated), and checks
 * that each result equals the single-threaded result for its inputs bit for bit; then MODEL_selftest.
 * Prints "ok" and exits 0, or prints what failed and exits 1.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define FN(f) CAT(MODEL, f)
#define REPEATS 20
#define MAX_ARRAYS 8

static long elements(int (*shape)(int, int64_t *), int i) {
    int64_t dims[16];
    int rank = shape(i, dims);
    long n = 1;
    for (int k = 0; k < rank; k++)
        n *= dims[k];
    return n;
}

struct job {
    const float *inputs[MAX_ARRAYS];
    float *outputs[MAX_ARRAYS];
    float *expected[MAX_ARRAYS];
    int mismatches;
};

static void *work(void *arg) {
    struct job *job = arg;
    for (int r = 0; r < REPEATS; r++) {
        if (FN(run)(job->inputs, job->outputs) != 0) {
            job->mismatches++;
            continue;
        }
        for (int i = 0; i < FN(num_outputs)(); i++)
            if (memcmp(job->outputs[i], job->expected[i], sizeof(float) * elements(FN(output_shape), i)))
                job->mismatches++;
    }
    return NULL;
}

static int fill_job(struct job *job, float *const *inputs, float sign) {
    for (int i = 0; i < FN(num_inputs)(); i++) {
        long n = elements(FN(input_shape), i);
        float *copy = malloc(sizeof(float) * n);
        for (long k = 0; k < n; k++)
            copy[k] = sign * inputs[i][k];
        job->inputs[i] = copy;
    }
    for (int i = 0; i < FN(num_outputs)(); i++) {
        long n = elements(FN(output_shape), i);
        job->outputs[i] = malloc(sizeof(float) * n);
        job->expected[i] = malloc(sizeof(float) * n);
    }
    job->mismatches = 0;
    return FN(run)(job->inputs, job->expected);
}

int main(int argc, char **argv) {
    FN(set_num_threads)(2);             /* every call on two threads, even for small graphs */
    if (argc != 3 || FN(num_inputs)() > MAX_ARRAYS || FN(num_outputs)() > MAX_ARRAYS)
        return 2;
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    float *inputs[MAX_ARRAYS], *outputs[MAX_ARRAYS];
    for (int i = 0; i < FN(num_inputs)(); i++) {
        long n = elements(FN(input_shape), i);
        inputs[i] = malloc(sizeof(float) * n);
        if (!in || fread(inputs[i], sizeof(float), n, in) != (size_t)n)
            return 2;
    }
    for (int i = 0; i < FN(num_outputs)(); i++)
        outputs[i] = malloc(sizeof(float) * elements(FN(output_shape), i));
    if (FN(run)((const float *const *)inputs, outputs) != 0) {
        printf("run failed: %s\n", FN(last_error)());
        return 1;
    }
    for (int i = 0; i < FN(num_outputs)(); i++)
        fwrite(outputs[i], sizeof(float), elements(FN(output_shape), i), out);
    fclose(out);

    struct job jobs[2];
    if (fill_job(&jobs[0], inputs, 1.0f) != 0 || fill_job(&jobs[1], inputs, -1.0f) != 0) {
        printf("run failed: %s\n", FN(last_error)());
        return 1;
    }
    pthread_t threads[2];
    pthread_attr_t small_stack;         /* the stack docs/guide.md says a calling thread needs */
    pthread_attr_init(&small_stack);
    pthread_attr_setstacksize(&small_stack, 512 * 1024);
    for (int t = 0; t < 2; t++)
        pthread_create(&threads[t], &small_stack, work, &jobs[t]);
    pthread_attr_destroy(&small_stack);
    for (int t = 0; t < 2; t++)
        pthread_join(threads[t], NULL);
    if (jobs[0].mismatches || jobs[1].mismatches) {
        printf("concurrent runs differ: %d and %d mismatches\n", jobs[0].mismatches, jobs[1].mismatches);
        return 1;
    }
    if (FN(selftest)() != 0) {
        printf("selftest failed: %s\n", FN(last_error)());
        return 1;
    }
    printf("ok\n");
    return 0;
}
