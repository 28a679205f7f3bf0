#include "cxdp.h"
int ct_placeholder(void){return 0;}
