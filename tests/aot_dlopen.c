/* Test program for a library written by lucid.export (tests/test_export.py), built as
 *     cc aot_dlopen.c -ldl -lpthread
 * `aot_dlopen LIBRARY NAME INPUTS.bin OUTPUTS_PREFIX` loads LIBRARY with dlopen twice. Each time it
 * calls NAME_run with two threads (so on the library's worker pool) on the inputs (float32,
 * concatenated, sizes from the library's shape functions), writes the outputs to OUTPUTS_PREFIX0.bin
 * (first load) or OUTPUTS_PREFIX1.bin (second load) and runs NAME_selftest. After the first load's
 * dlclose it checks that the library is unmapped and that this process has one thread left (the
 * pool's workers were joined, none runs unmapped code). The second load is not closed: a forked
 * child runs it once more (its own pool: the parent's workers do not exist in the child) and writes
 * OUTPUTS_PREFIX2.bin, then both exit with the workers stopped at exit. Prints "ok" and exits 0, or
 * prints what failed and exits 1.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ARRAYS 8

typedef int (*shape_fn)(int, int64_t *);

static void *symbol(void *library, const char *name, const char *suffix) {
    char full[256];
    snprintf(full, sizeof full, "%s_%s", name, suffix);
    void *found = dlsym(library, full);
    if (!found) {
        printf("no symbol %s\n", full);
        exit(1);
    }
    return found;
}

static long elements(shape_fn shape, int i) {
    int64_t dims[16];
    long n = 1;
    for (int k = 0, rank = shape(i, dims); k < rank; k++)
        n *= dims[k];
    return n;
}

static int threads_of_this_process(void) {
    DIR *tasks = opendir("/proc/self/task");
    int count = 0;
    for (struct dirent *entry; tasks && (entry = readdir(tasks));)
        count += entry->d_name[0] != '.';
    if (tasks)
        closedir(tasks);
    return count;
}

/* Load the library, run it on the inputs with two threads, write the outputs; the handle. */
static void *load_and_run(const char *path, const char *name, const char *inputs_path, const char *outputs_path) {
    void *library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!library) {
        printf("dlopen failed: %s\n", dlerror());
        exit(1);
    }
    shape_fn input_shape = symbol(library, name, "input_shape"), output_shape = symbol(library, name, "output_shape");
    int inputs_count = ((int (*)(void))symbol(library, name, "num_inputs"))();
    int outputs_count = ((int (*)(void))symbol(library, name, "num_outputs"))();
    int (*run)(const float *const *, float *const *) = symbol(library, name, "run");
    const char *(*last_error)(void) = symbol(library, name, "last_error");
    if (inputs_count > MAX_ARRAYS || outputs_count > MAX_ARRAYS)
        exit(2);
    ((void (*)(int))symbol(library, name, "set_num_threads"))(2);
    FILE *in = fopen(inputs_path, "rb"), *out = fopen(outputs_path, "wb");
    const float *inputs[MAX_ARRAYS];
    float *outputs[MAX_ARRAYS];
    for (int i = 0; i < inputs_count; i++) {
        float *x = malloc(sizeof(float) * elements(input_shape, i));
        if (!in || fread(x, sizeof(float), elements(input_shape, i), in) != (size_t)elements(input_shape, i))
            exit(2);
        inputs[i] = x;
    }
    for (int i = 0; i < outputs_count; i++)
        outputs[i] = malloc(sizeof(float) * elements(output_shape, i));
    if (run(inputs, outputs) != 0 || ((int (*)(void))symbol(library, name, "selftest"))() != 0) {
        printf("run failed: %s\n", last_error());
        exit(1);
    }
    for (int i = 0; i < outputs_count; i++)
        fwrite(outputs[i], sizeof(float), elements(output_shape, i), out);
    fclose(in);
    fclose(out);
    return library;
}

int main(int argc, char **argv) {
    if (argc != 5)
        return 2;
    char outputs[4096];
    snprintf(outputs, sizeof outputs, "%s0.bin", argv[4]);
    void *library = load_and_run(argv[1], argv[2], argv[3], outputs);
    if (dlclose(library) != 0) {
        printf("dlclose failed: %s\n", dlerror());
        return 1;
    }
    if (dlopen(argv[1], RTLD_NOW | RTLD_NOLOAD)) {
        printf("the library is still loaded after dlclose\n");
        return 1;
    }
    if (threads_of_this_process() != 1) {
        printf("%d threads left after dlclose\n", threads_of_this_process());
        return 1;
    }
    snprintf(outputs, sizeof outputs, "%s1.bin", argv[4]);
    load_and_run(argv[1], argv[2], argv[3], outputs);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        snprintf(outputs, sizeof outputs, "%s2.bin", argv[4]);
        load_and_run(argv[1], argv[2], argv[3], outputs);
        exit(0);
    }
    int status;
    if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        printf("the forked child failed\n");
        return 1;
    }
    printf("ok\n");
    return 0;
}
