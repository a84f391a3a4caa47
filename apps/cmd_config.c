/* memfold config: list the presets, print or write a full configuration. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apps/commands.h"
#include "model/config.h"

static void config_usage(FILE *f)
{
    fprintf(f, "usage: memfold config list\n"
               "       memfold config show --config NAME|FILE.json [--set key.path=value ...] "
               "[-o FILE.json]\n"
               "       memfold config keys [--config NAME|FILE.json] [--set key.path=value ...]\n"
               "\n"
               "  list   the presets\n"
               "  show   the full configuration as JSON (to stdout, or to FILE.json with -o)\n"
               "  keys   every key with its value, one per line (the keys --set accepts)\n"
               "\n"
               "A JSON file starts from the preset in its \"base\" key (default af2-initial) and\n"
               "overrides the keys it gives; --set overrides apply after it, in order.\n");
}

static int config_list(void)
{
    for (int i = 0; i < mf_config_num_presets(); i++)
        printf("%-14s %s\n", mf_config_preset_name(i), mf_config_preset_description(i));
    return 0;
}

int mf_cmd_config(int argc, char **argv)
{
    if (argc < 2) {
        config_usage(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        config_usage(stdout);
        return 0;
    }
    if (!strcmp(sub, "list")) {
        if (argc != 2) {
            config_usage(stderr);
            return 2;
        }
        return config_list();
    }
    bool show = !strcmp(sub, "show");
    if (!show && strcmp(sub, "keys")) {
        fprintf(stderr, "memfold config: unknown subcommand '%s'\n\n", sub);
        config_usage(stderr);
        return 2;
    }

    const char *config_name = NULL, *out_path = NULL;
    const char **sets = calloc((size_t)argc, sizeof *sets);
    int n_sets = 0, rc = 0;
    if (!sets) {
        fprintf(stderr, "memfold config: out of memory\n");
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            config_usage(stdout);
            goto done;
        } else if (!strcmp(a, "--config") && has_value) {
            config_name = argv[++i];
        } else if (!strcmp(a, "--set") && has_value) {
            sets[n_sets++] = argv[++i];
        } else if (show && (!strcmp(a, "-o") || !strcmp(a, "--output")) && has_value) {
            out_path = argv[++i];
        } else {
            fprintf(stderr, "memfold config %s: unexpected argument '%s'%s\n\n", sub, a,
                    has_value ? "" : " (or a missing value)");
            config_usage(stderr);
            rc = 2;
            goto done;
        }
    }
    if (show && !config_name) {
        fprintf(stderr, "memfold config show: --config NAME|FILE.json is required\n\n");
        config_usage(stderr);
        rc = 2;
        goto done;
    }

    mf_config cfg;
    if (mf_config_load_with_overrides(config_name ? config_name : "af2-initial", sets, n_sets,
                                      &cfg) != MF_OK) {
        rc = mf_report_error("config");
        goto done;
    }
    if (!show) {
        char value[64];
        for (int i = 0; i < mf_config_num_keys(); i++) {
            mf_config_get(&cfg, mf_config_key(i), value, sizeof value);
            printf("%s=%s\n", mf_config_key(i), value);
        }
    } else if (out_path) {
        if (mf_config_save(&cfg, out_path) != MF_OK) {
            rc = mf_report_error("config");
            goto done;
        }
        fprintf(stderr, "memfold config: wrote %s\n", out_path);
    } else {
        char *text = NULL;
        if (mf_config_to_json(&cfg, &text) != MF_OK) {
            rc = mf_report_error("config");
            goto done;
        }
        fputs(text, stdout);
        free(text);
    }
done:
    free(sets);
    return rc;
}
