/* libFuzzer target: the HHsearch .hhr reader (header, hit table, alignment blocks). */
#include <stddef.h>
#include <stdint.h>

#include "data/hhr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mf_hhr h;
    if (mf_hhr_parse((const char *)data, size, "fuzz.hhr", &h) == MF_OK) mf_hhr_free(&h);
    return 0;
}
