/* keygen.c: `apprentice keygen`: make CURVE key pairs for security.curve. Each role (buffer,
 * learner, every actor and teacher) gets its own pair; servers (buffer, learner) hand their
 * public key to clients, clients' public keys go on the servers' allow-lists (PROTOCOL.md). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "apprentice/base.h"
#include "apprentice/cli.h"
#include "apprentice/transport.h"

static void s_usage(FILE *out) {
    fprintf(out,
            "usage: apprentice keygen [--dir DIR] [--force] NAME [NAME...]\n"
            "Make a CURVE key pair per NAME: DIR/NAME.pub (public key, Z85, share it) and\n"
            "DIR/NAME.key (secret key, Z85, mode 0600, never share it).\n"
            "Give every role its own pair, e.g. `apprentice keygen --dir keys buffer learner\n"
            "actor-0 actor-1 teacher-0`; with security.curve the buffer and the learner admit\n"
            "only clients whose DIR/*.pub is on their allow-list.\n\n"
            "  -d, --dir DIR   output directory (default: keys), created if missing\n"
            "  -f, --force     replace existing files\n"
            "  -h, --help      this help\n");
}

int ap_cmd_keygen(int argc, char **argv) {
    static const struct option opts[] = {{"dir", required_argument, 0, 'd'},
                                         {"force", no_argument, 0, 'f'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *dir = "keys";
    int force = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "d:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dir = optarg;
            break;
        case 'f':
            force = 1;
            break;
        case 'h':
            s_usage(stdout);
            return 0;
        default:
            s_usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        s_usage(stderr);
        return 2;
    }
    for (int i = optind; i < argc; i++) {
        const char *name = argv[i];
        if (!*name || strchr(name, '/') || name[0] == '.') {
            fprintf(stderr, "apprentice keygen: bad name '%s' (no '/', no leading '.')\n", name);
            return 2;
        }
        if (ap_curve_keygen(dir, name, force) < 0) {
            fprintf(stderr, "apprentice keygen: %s\n", ap_errmsg());
            return 1;
        }
        char pub[AP_Z85_KEY];
        if (ap_curve_load(dir, name, pub, NULL) < 0) {
            fprintf(stderr, "apprentice keygen: %s\n", ap_errmsg());
            return 1;
        }
        printf("%s/%s.pub %s\n", dir, name, pub);
    }
    return 0;
}
