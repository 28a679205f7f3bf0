#include "cbpffs.h"

#include <errno.h>
#include <sys/vfs.h>

int ct_filesystem_type(const char *path, uint32_t *type)
{
    struct statfs fs;
    if (statfs(path, &fs) != 0)
        return -errno;
    *type = (uint32_t)fs.f_type;
    return 0;
}
