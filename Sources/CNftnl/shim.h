#ifndef CONNTRACKR_CNFTNL_SHIM_H
#define CONNTRACKR_CNFTNL_SHIM_H
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <libnftnl/udata.h>
#endif
