/* Error messages name what failed; the policy parser accepts the documented spellings and rejects
 * everything else with a message; tensor shape checks produce readable errors. */
#include <string.h>

#include "memopt/policy.h"
#include "tests/support/mf_test.h"

static mf_status fails_inner(void)
{
    return MF_ERROR(MF_ERR_FORMAT, "msa.a3m:3: row length %d, expected %d", 5, 7);
}

static mf_status fails_outer(void)
{
    MF_TRY(fails_inner());
    return MF_OK;
}

int main(void)
{
    mf_status st = fails_outer();
    MF_TEST_TRUE(st == MF_ERR_FORMAT, "MF_TRY did not propagate the status");
    MF_TEST_TRUE(strstr(mf_last_error(), "test_status_policy.c:") &&
                     strstr(mf_last_error(), "row length 5, expected 7"),
                 "message lacks file:line or text: %s", mf_last_error());
    mf_error_context(st, "featurizing %s", "1abc.cif");
    MF_TEST_TRUE(strncmp(mf_last_error(), "featurizing 1abc.cif: ", 22) == 0,
                 "context prefix missing: %s", mf_last_error());
    printf("error message: %s\n", mf_last_error());

    mf_policy p = mf_policy_default();
    MF_TEST_OK(mf_policy_set(&p, "chunk", "64"));
    MF_TEST_OK(mf_policy_set(&p, "recompute", "every:3"));
    MF_TEST_OK(mf_policy_set(&p, "storage", "bf16"));
    MF_TEST_OK(mf_policy_set(&p, "compute", "fp32"));
    MF_TEST_OK(mf_policy_set(&p, "offload", "on"));
    MF_TEST_TRUE(p.chunk_size == 64 && p.recompute == MF_RECOMPUTE_EVERY_K &&
                     p.recompute_every == 3 && p.storage == MF_BF16 && p.compute == MF_F32 &&
                     p.offload,
                 "policy fields not set as parsed");
    char buf[160];
    mf_policy_describe(&p, buf, sizeof buf);
    printf("policy: %s\n", buf);
    MF_TEST_TRUE(!strcmp(buf, "chunk=64 recompute=every:3 storage=bf16 compute=f32 offload=on "
                              "inplace=off"),
                 "describe gave '%s'", buf);
    /* per-module chunk sizes override chunk_size; "off" turns chunking off for that module */
    MF_TEST_OK(mf_policy_set(&p, "chunk.triangle_multiplication", "16"));
    MF_TEST_OK(mf_policy_set(&p, "chunk.pair_transition", "off"));
    MF_TEST_TRUE(mf_policy_op_chunk(&p, MF_CHUNK_TRIANGLE_MULTIPLICATION) == 16 &&
                     mf_policy_op_chunk(&p, MF_CHUNK_PAIR_TRANSITION) == 0 &&
                     mf_policy_op_chunk(&p, MF_CHUNK_MSA_ROW_ATTENTION) == 64,
                 "per-module chunk sizes: %lld %lld %lld",
                 (long long)mf_policy_op_chunk(&p, MF_CHUNK_TRIANGLE_MULTIPLICATION),
                 (long long)mf_policy_op_chunk(&p, MF_CHUNK_PAIR_TRANSITION),
                 (long long)mf_policy_op_chunk(&p, MF_CHUNK_MSA_ROW_ATTENTION));
    mf_policy_describe(&p, buf, sizeof buf);
    MF_TEST_TRUE(strstr(buf, " chunk.triangle_multiplication=16 chunk.pair_transition=off"),
                 "describe gave '%s'", buf);
    const char *bad[][2] = {{"chunk", "-4"},
                            {"chunk", "12x"},
                            {"recompute", "sometimes"},
                            {"storage", "fp16"},
                            {"offload", "maybe"},
                            {"chunks", "4"},
                            {"recompute", "every:0"},
                            {"chunk.triangle_multiplication", "0"},
                            {"chunk.nonsense", "4"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        st = mf_policy_set(&p, bad[i][0], bad[i][1]);
        MF_TEST_TRUE(st == MF_ERR_INVALID, "policy %s=%s accepted", bad[i][0], bad[i][1]);
        MF_TEST_TRUE(strstr(mf_last_error(), bad[i][0]) != NULL, "message does not name %s: %s",
                     bad[i][0], mf_last_error());
    }

    float data[6] = {0};
    mf_tensor a = mf_tensor_f32(data, 2, 2, 3, 1, 1), b = mf_tensor_f32(data, 2, 3, 2, 1, 1);
    st = mf_check_same_shape(&a, "m", &b, "z");
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "[2, 3] f32") &&
                     strstr(mf_last_error(), "[3, 2] f32"),
                 "shape mismatch message: %s", mf_last_error());
    mf_tensor r;
    int64_t bad_shape[2] = {4, 2};
    MF_TEST_TRUE(mf_tensor_reshape(&r, &a, 2, bad_shape) == MF_ERR_INVALID,
                 "reshape changing the element count accepted");
    int64_t ok_shape[1] = {6};
    MF_TEST_OK(mf_tensor_reshape(&r, &a, 1, ok_shape));
    return mf_test_finish("test_status_policy");
}
