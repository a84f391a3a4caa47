/* libFuzzer target: FASTA parser (strict and map-to-X modes). Any input must parse or fail with a
 * status; no crash, no leak, no undefined behaviour. */
#include <stddef.h>
#include <stdint.h>

#include "data/fasta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (unsigned flags = 0; flags < 2; flags++) {
        mf_fasta f;
        if (mf_fasta_parse((const char *)data, size, "fuzz.fasta", flags, &f) == MF_OK)
            mf_fasta_free(&f);
    }
    return 0;
}
