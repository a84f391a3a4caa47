/* libFuzzer target: MSA parsers (a3m, Stockholm, aligned FASTA, plain, auto-detect). */
#include <stddef.h>
#include <stdint.h>

#include "data/msa.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    /* The first byte picks the format, the rest is the file. */
    mf_msa_format fmt = (mf_msa_format)(data[0] % 5);
    mf_msa m;
    if (mf_msa_parse((const char *)data + 1, size - 1, "fuzz.msa", fmt, 0, &m) == MF_OK)
        mf_msa_free(&m);
    return 0;
}
