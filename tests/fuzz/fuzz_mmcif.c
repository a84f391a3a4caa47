/* libFuzzer target: the CIF tokenizer and the mmCIF chain reader. */
#include <stddef.h>
#include <stdint.h>

#include "data/mmcif.h"
#include "protein/protein.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_protein *chains = NULL;
    int n = 0;
    if (mf_mmcif_parse((const char *)data, size, "fuzz.cif", &chains, &n) == MF_OK)
        mf_protein_list_free(chains, n);
    return 0;
}
