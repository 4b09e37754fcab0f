/* What CURVE adds per bus frame, bounded from below by the cipher alone
 * (docs/capacity.md §7): libzmq's CURVE mechanism boxes each message frame
 * with crypto_box_afternm (XSalsa20-Poly1305, the precomputed key of the
 * session) and the receiver opens it with crypto_box_open_afternm. This
 * times exactly those two calls from the same libsodium libzmq links, per
 * frame size, in CPU time (CLOCK_PROCESS_CPUTIME_ID: steadier than wall time
 * on a shared machine). libzmq's own framing, copies and allocation around
 * them are not in it.
 *   cc -O2 -o /tmp/curve-box docs/bench/curve-box.c -lsodium && /tmp/curve-box
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(void) {
    if (sodium_init() < 0) return 1;
    unsigned char pk[crypto_box_PUBLICKEYBYTES], sk[crypto_box_SECRETKEYBYTES], k[crypto_box_BEFORENMBYTES];
    unsigned char nonce[crypto_box_NONCEBYTES] = {0};
    crypto_box_keypair(pk, sk);
    if (crypto_box_beforenm(k, pk, sk) != 0) return 1;
    const size_t sizes[] = {256, 1024, 4096, 262144};
    for (int s = 0; s < 4; s++) {
        size_t n = sizes[s];
        unsigned char *plain = malloc(n), *boxed = malloc(n + crypto_box_MACBYTES), *opened = malloc(n);
        randombytes_buf(plain, n);
        long iterations = (long)(200e6 / (double)(n + 200));
        double best_box = 1e9, best_open = 1e9;
        for (int run = 0; run < 3; run++) { /* the fastest of 3: the least disturbed by neighbours */
            double t0 = cpu_seconds();
            for (long i = 0; i < iterations; i++) { nonce[0] = (unsigned char)i; crypto_box_easy_afternm(boxed, plain, n, nonce, k); }
            double t1 = cpu_seconds();
            for (long i = 0; i < iterations; i++) {
                if (crypto_box_open_easy_afternm(opened, boxed, n + crypto_box_MACBYTES, nonce, k) != 0) return 2;
            }
            double t2 = cpu_seconds();
            if ((t1 - t0) / iterations < best_box) best_box = (t1 - t0) / iterations;
            if ((t2 - t1) / iterations < best_open) best_open = (t2 - t1) / iterations;
        }
        printf("%7zu bytes: box %8.2f us, open %8.2f us, %6.0f MB/s boxed\n", n, best_box * 1e6, best_open * 1e6, n / best_box / 1e6);
        free(plain); free(boxed); free(opened);
    }
    return 0;
}
