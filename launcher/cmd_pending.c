/* cmd_pending.c: subcommands whose module has not landed yet. Each entry is removed from this
 * file when its module defines the real ap_cmd_NAME; the file goes when it is empty. */
#include <stdio.h>

#include "apprentice/cli.h"

static int s_pending(const char *name) {
    fprintf(stderr, "apprentice %s: not available in this build yet\n", name);
    return 1;
}

