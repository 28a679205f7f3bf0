#ifndef CONNTRACKR_CZLIB_SHIM_H
#define CONNTRACKR_CZLIB_SHIM_H
#include <zlib.h>
#endif
