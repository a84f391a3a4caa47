/* Device memory, copies, the CUDA state behind mf_ctx (stream, cuBLAS and cuBLASLt handles), and
 * the argument checks and matrix-product helper shared by the op twins. */
#include "core/cuda/cuda_internal.h"

#include <stdlib.h>
#include <string.h>

/* cuBLAS's workspace: 32 MiB is what NVIDIA recommends for Hopper (4 MiB suffices before it). */
#define MF_CUBLAS_WORKSPACE_BYTES ((size_t)32 << 20)

extern "C" int mf_cuda_device_count(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        /* No driver, no GPU or an insufficient driver all mean "no CUDA device" here; clear the
         * recorded error so the next checked call does not report it. */
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" mf_status mf_cuda_malloc(size_t bytes, void **out)
{
    *out = NULL;
    cudaError_t e = cudaMalloc(out, bytes);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        *out = NULL;
        size_t free_b = 0, total_b = 0;
        char need[32], fr[32], tot[32];
        if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) (void)cudaGetLastError();
        return MF_ERROR(MF_ERR_NOMEM, "cudaMalloc of %s failed: %s free of %s on the device",
                        mf_format_bytes(bytes, need, sizeof need),
                        mf_format_bytes(free_b, fr, sizeof fr),
                        mf_format_bytes(total_b, tot, sizeof tot));
    }
    if (e != cudaSuccess) *out = NULL;
    MF_CUDA_CHECK(e);
    return MF_OK;
}

extern "C" int mf_cuda_sync_launches(void)
{
    static int cached = -1;
    if (cached < 0) {
        const char *v = getenv("MEMFOLD_CUDA_SYNC");
        cached = v && *v && strcmp(v, "0") != 0;
    }
    return cached;
}

extern "C" mf_status mf_cuda_set_device(int index)
{
    const int n = mf_cuda_device_count();
    MF_REQUIRE(n > 0, "no CUDA device");
    MF_CUDA_CHECK(cudaSetDevice((index % n + n) % n));
    return MF_OK;
}

extern "C" void mf_cuda_free(void *p)
{
    /* Nothing useful can be done with a failure while freeing; clear it so it is not reported
     * against the next call. */
    if (p && cudaFree(p) != cudaSuccess) (void)cudaGetLastError();
}

extern "C" mf_status mf_cuda_memset0(void *p, size_t bytes)
{
    if (bytes == 0) return MF_OK;
    MF_CUDA_CHECK(cudaMemset(p, 0, bytes));
    return MF_OK;
}

extern "C" mf_status mf_cuda_copy_to_device(void *dst, const void *src, size_t bytes)
{
    if (bytes == 0) return MF_OK;
    /* cudaMemcpy runs on the legacy default stream, which waits for the contexts' blocking
     * streams: the copy sees every op queued before it. */
    MF_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
    return MF_OK;
}

extern "C" mf_status mf_cuda_copy_to_host(void *dst, const void *src, size_t bytes)
{
    if (bytes == 0) return MF_OK;
    MF_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
    return MF_OK;
}

extern "C" mf_status mf_cuda_copy_on_device(void *dst, const void *src, size_t bytes)
{
    if (bytes == 0) return MF_OK;
    MF_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
    return MF_OK;
}

extern "C" mf_status mf_cuda_synchronize(const struct mf_cuda_state *s)
{
    if (s) MF_CUDA_CHECK(cudaStreamSynchronize(s->stream));
    return MF_OK;
}

extern "C" mf_status mf_cuda_mem_info(size_t *free_bytes, size_t *total_bytes)
{
    *free_bytes = 0;
    *total_bytes = 0;
    MF_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
    return MF_OK;
}

static mf_status cuda_state_init(struct mf_cuda_state *s)
{
    MF_CUDA_CHECK(cudaGetDevice(&s->device));
    MF_CUDA_CHECK(cudaDeviceGetAttribute(&s->sm_count, cudaDevAttrMultiProcessorCount, s->device));
    MF_CUDA_CHECK(cudaStreamCreateWithFlags(&s->stream, cudaStreamDefault));
    MF_CUBLAS_CHECK(cublasCreate(&s->cublas));
    MF_CUBLAS_CHECK(cublasSetStream(s->cublas, s->stream));
    /* Plain f32 products stay f32 (no TF32): the CUDA path is held to 1e-5 of the CPU. */
    MF_CUBLAS_CHECK(cublasSetMathMode(s->cublas, CUBLAS_DEFAULT_MATH));
    MF_CUBLAS_CHECK(cublasSetPointerMode(s->cublas, CUBLAS_POINTER_MODE_HOST));
    MF_CUDA_CHECK(cudaMalloc(&s->cublas_workspace, MF_CUBLAS_WORKSPACE_BYTES));
    s->cublas_workspace_bytes = MF_CUBLAS_WORKSPACE_BYTES;
    MF_CUBLAS_CHECK(cublasSetWorkspace(s->cublas, s->cublas_workspace, s->cublas_workspace_bytes));
    MF_CUBLAS_CHECK(cublasLtCreate(&s->cublaslt));
    return MF_OK;
}

extern "C" mf_status mf_cuda_state_create(struct mf_cuda_state **out)
{
    *out = NULL;
    if (mf_cuda_device_count() == 0)
        return MF_ERROR(MF_ERR_UNSUPPORTED, "no CUDA device (no driver or no GPU visible)");
    struct mf_cuda_state *s = (struct mf_cuda_state *)calloc(1, sizeof *s);
    if (!s) return MF_ERROR(MF_ERR_NOMEM, "no host memory for the CUDA state");
    mf_status st = cuda_state_init(s);
    if (st != MF_OK) {
        mf_cuda_state_destroy(s);
        return mf_error_context(st, "creating the CUDA state");
    }
    *out = s;
    return MF_OK;
}

extern "C" void mf_cuda_state_destroy(struct mf_cuda_state *s)
{
    if (!s) return;
    /* Teardown failures are cleared, not reported: there is no caller left to handle them. */
    if (s->stream && cudaStreamSynchronize(s->stream) != cudaSuccess) (void)cudaGetLastError();
    if (s->cublaslt) (void)cublasLtDestroy(s->cublaslt);
    if (s->cublas) (void)cublasDestroy(s->cublas);
    if (s->cublas_workspace) mf_cuda_free(s->cublas_workspace);
    if (s->stream && cudaStreamDestroy(s->stream) != cudaSuccess) (void)cudaGetLastError();
    free(s);
}

extern "C" size_t mf_cuda_state_workspace_bytes(const struct mf_cuda_state *s)
{
    return s ? s->cublas_workspace_bytes : 0;
}

/* ---- checks shared by the op twins ---------------------------------------------------------- */

mf_status mf_cuda_check_ctx(const mf_ctx *ctx, const char *op)
{
    MF_REQUIRE(ctx && ctx->device == MF_DEV_CUDA && ctx->cuda,
               "%s on CUDA needs a context created on MF_DEV_CUDA", op);
    MF_REQUIRE(ctx->arena && ctx->arena->device == MF_DEV_CUDA,
               "%s on CUDA needs the context's arena on the device", op);
    return MF_OK;
}

mf_status mf_cuda_check_dev(const mf_tensor *t, const char *op, const char *name, mf_dtype dtype)
{
    if (!t || !t->data) return MF_ERROR(MF_ERR_INVALID, "%s: tensor %s is missing", op, name);
    char b[96];
    if (t->device != MF_DEV_CUDA)
        return MF_ERROR(MF_ERR_INVALID, "%s on CUDA: tensor %s (%s) is not a device tensor", op,
                        name, mf_tensor_describe(t, b, sizeof b));
    if (t->dtype != dtype)
        return MF_ERROR(MF_ERR_INVALID, "%s: tensor %s is %s, expected dtype %s", op, name,
                        mf_tensor_describe(t, b, sizeof b), mf_dtype_name(dtype));
    return MF_OK;
}

mf_status mf_cuda_check_numel(const mf_tensor *t, const char *tn, int64_t n, const char *op)
{
    if (mf_tensor_numel(t) != n) {
        char b[96];
        return MF_ERROR(MF_ERR_INVALID, "%s: tensor %s is %s, expected %lld elements", op, tn,
                        mf_tensor_describe(t, b, sizeof b), (long long)n);
    }
    return MF_OK;
}

mf_status mf_cuda_check_bias_mask(const char *op, const mf_tensor *bias, const mf_tensor *mask,
                                  int64_t B, int64_t H, int64_t Q, int64_t K)
{
    if (bias) {
        MF_TRY(mf_cuda_check_dev(bias, op, "bias", MF_F32));
        MF_TRY(mf_cuda_check_numel(bias, "bias [H, Q, K]", H * Q * K, op));
    }
    if (mask) {
        MF_TRY(mf_cuda_check_dev(mask, op, "mask", MF_F32));
        MF_TRY(mf_cuda_check_numel(mask, "mask [B, K]", B * K, op));
    }
    return MF_OK;
}

mf_status mf_cuda_operand(mf_ctx *ctx, const mf_tensor *x, mf_dtype want, const void **out)
{
    *out = NULL;
    if (x->dtype == want) {
        *out = x->data;
        return MF_OK;
    }
    MF_REQUIRE(x->dtype == MF_F32 || x->dtype == MF_BF16, "matrix operand of dtype %s",
               mf_dtype_name(x->dtype));
    const int64_t n = mf_tensor_numel(x);
    void *p = NULL;
    MF_TRY(mf_arena_alloc(ctx->arena, (size_t)n * mf_dtype_size(want), "cuda gemm operand", &p));
    MF_TRY(mf_cuda_convert_raw(ctx, p, want, x->data, x->dtype, n));
    *out = p;
    return MF_OK;
}

mf_status mf_cuda_gemm(mf_ctx *ctx, float *c, const void *a, bool ta, const void *b, bool tb,
                       mf_dtype dt, int64_t batch, int64_t batch_a, int64_t batch_b, int64_t M,
                       int64_t N, int64_t K, float alpha, float beta)
{
    if (batch == 0 || M == 0 || N == 0) return MF_OK;
    if (K == 0) return mf_cuda_scale_inplace_raw(ctx, c, beta, batch * M * N);
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX || batch > INT_MAX)
        return MF_ERROR(MF_ERR_UNSUPPORTED,
                        "matrix product of %lld x [%lld, %lld] @ [%lld, %lld]: dims beyond int",
                        (long long)batch, (long long)M, (long long)K, (long long)K, (long long)N);
    MF_REQUIRE(dt == MF_F32 || dt == MF_BF16, "matrix product with %s inputs", mf_dtype_name(dt));
    const cudaDataType_t ty = dt == MF_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    /* cuBLAS is column-major: a row-major [r, c] matrix is its column-major transpose, so the
     * row-major C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T. */
    const int lda = (int)(ta ? M : K), ldb = (int)(tb ? K : N), ldc = (int)N;
    const long long stride_a = batch_a == 1 ? 0 : (long long)(M * K);
    const long long stride_b = batch_b == 1 ? 0 : (long long)(K * N);
    const long long stride_c = (long long)(M * N);
    MF_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        ctx->cuda->cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N,
        (int)M, (int)K, &alpha, b, ty, ldb, stride_b, a, ty, lda, stride_a, &beta, c, CUDA_R_32F,
        ldc, stride_c, (int)batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return MF_OK;
}
