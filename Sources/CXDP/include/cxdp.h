#include <stdint.h>
int ct_placeholder(void);
