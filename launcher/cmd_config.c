/* cmd_config.c: `apprentice config [CONFIG] [--set key=value]...`: print the resolved config
 * (defaults, then the file, then the overrides), or `--keys` every key of the schema. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "apprentice/base.h"
#include "apprentice/cli.h"
#include "apprentice/config.h"

int ap_cmd_config(int argc, char **argv) {
    static const struct option opts[] = {{"set", required_argument, 0, 's'},
                                         {"keys", no_argument, 0, 'k'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char **sets = ap_calloc((size_t)argc, sizeof *sets);
    int nsets = 0, keys = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "s:kh", opts, NULL)) != -1) {
        switch (c) {
        case 's': sets[nsets++] = optarg; break;
        case 'k': keys = 1; break;
        case 'h':
            printf("usage: apprentice config [CONFIG.yaml] [--set key=value]... [--keys]\n"
                   "Print the resolved config: defaults, then CONFIG, then each --set.\n"
                   "  --set key=value  override one key (dotted path; the value is YAML)\n"
                   "  --keys           list every config key instead\n");
            free(sets);
            return 0;
        default: free(sets); return 2;
        }
    }
    if (keys) {
        for (const char *const *k = ap_config_keys(); *k; k++) printf("%s\n", *k);
        free(sets);
        return 0;
    }
    const char *path = optind < argc ? argv[optind] : NULL;
    ap_config_t *cfg = ap_config_load(path, sets, nsets);
    free(sets);
    if (!cfg) {
        fprintf(stderr, "apprentice config: %s\n", ap_errmsg());
        return 1;
    }
    char *y = ap_config_to_yaml(cfg);
    fputs(y, stdout);
    free(y);
    ap_config_destroy(&cfg);
    return 0;
}
