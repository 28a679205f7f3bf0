#ifndef CONNTRACKR_CZSTD_SHIM_H
#define CONNTRACKR_CZSTD_SHIM_H
#include <zstd.h>
#endif
