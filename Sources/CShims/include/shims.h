#pragma once
#include <signal.h>
#include <sys/prctl.h>

/// Asks the kernel to send SIGTERM to this process when its parent dies, so
/// children of a killed supervisor do not linger. (prctl is variadic, which
/// Swift cannot call directly.)
static inline int chatd_die_with_parent(void) {
    return prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0);
}
