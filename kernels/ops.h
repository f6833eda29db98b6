// The op registry: every op of a program, declared once. Each entry names the op as programs
// and lib/backend/ops.ts spell it and the prefix of its types in kernels/<op>.h (<Prefix>Op: the fields
// a program gives it; <Prefix>Limits: the limits a backend's implementation declares; check():
// its shape rules). Everything else is derived from this list: the OpKind enum and names, the
// AnyOp variant the addon parses programs into, the per-op profile slots, each backend's
// dispatch (std::visit over AnyOp), the OpLimits a backend reports, and the op list the addon
// exports for lib/backend/ops.ts's test.
//
// Adding an op: its contract header kernels/<op>.h, a line here, one file per backend
// (kernels/cpu/<op>.cc: <op>_cpu and run_cpu), lib/backend/ops.ts, its test and its benchmark case.
#pragma once
#include <variant>

#include "kernels/attention.h"
#include "kernels/embed.h"
#include "kernels/kv_append.h"
#include "kernels/matmul_bf16.h"
#include "kernels/moe_combine.h"
#include "kernels/moe_mxfp4.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/router_topk.h"

// X(name, Prefix), in forward-pass order.
#define GPTOSS_OPS(X)          \
  X(embed, Embed)              \
  X(rmsnorm, Rmsnorm)          \
  X(matmul_bf16, MatmulBf16)   \
  X(rope, Rope)                \
  X(kv_append, KvAppend)       \
  X(attention, Attention)      \
  X(router_topk, RouterTopk)   \
  X(moe_mxfp4, MoeMxfp4)       \
  X(moe_combine, MoeCombine)

namespace gptoss {

#define GPTOSS_X(name, Prefix) Prefix,
enum class OpKind { GPTOSS_OPS(GPTOSS_X) };
#undef GPTOSS_X

#define GPTOSS_X(name, Prefix) +1
constexpr int kOpCount = 0 GPTOSS_OPS(GPTOSS_X);
#undef GPTOSS_X

#define GPTOSS_X(name, Prefix) , Prefix##Op
// Alternative i + 1 is OpKind i (monostate: not parsed yet).
using AnyOp = std::variant<std::monostate GPTOSS_OPS(GPTOSS_X)>;
#undef GPTOSS_X

inline OpKind op_kind(const AnyOp& op) { return OpKind(op.index() - 1); }

inline const char* op_name(OpKind k) {
#define GPTOSS_X(name, Prefix) #name,
  static const char* names[] = {GPTOSS_OPS(GPTOSS_X)};
#undef GPTOSS_X
  return names[int(k)];
}

// The limits of one backend's implementation of every op.
struct OpLimits {
#define GPTOSS_X(name, Prefix) Prefix##Limits name;
  GPTOSS_OPS(GPTOSS_X)
#undef GPTOSS_X
};

// The limits of op `Op` within a backend's OpLimits.
#define GPTOSS_X(name, Prefix) \
  inline const Prefix##Limits& limits_of(const Prefix##Op&, const OpLimits& l) { return l.name; }
GPTOSS_OPS(GPTOSS_X)
#undef GPTOSS_X

// A parsed op with no scratch needs none on any backend (overloads in the contract headers win).
template <class Op>
size_t scratch_bytes_cpu(const Op&, const ScratchPlan&) {
  return 0;
}

// Calls fn(name, default-constructed Op) for every op, in registry order.
template <class Fn>
void for_each_op(Fn&& fn) {
#define GPTOSS_X(name, Prefix) fn(#name, Prefix##Op{});
  GPTOSS_OPS(GPTOSS_X)
#undef GPTOSS_X
}

// Makes the AnyOp for a name, or monostate if there is no such op.
inline AnyOp make_op(const std::string& name) {
#define GPTOSS_X(n, Prefix) \
  if (name == #n) return Prefix##Op{};
  GPTOSS_OPS(GPTOSS_X)
#undef GPTOSS_X
  return std::monostate{};
}

}  // namespace gptoss
