#include <zmq.h>
#include <sys/eventfd.h>
// malloc_trim and mallopt: most of what a broker allocates is libzmq's
// messages, and glibc keeps their freed pages unless told to return them.
#include <malloc.h>
