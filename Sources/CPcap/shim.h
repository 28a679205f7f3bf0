#ifndef CONNTRACKR_CPCAP_SHIM_H
#define CONNTRACKR_CPCAP_SHIM_H
#include <pcap/pcap.h>
#endif
