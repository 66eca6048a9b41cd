#include "vilau/core/recompute.h"

#include <torch/torch.h>

#include "vilau/core/error.h"

namespace vilau {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The block travels from forward to backward inside the autograd context.
struct BlockHolder : torch::CustomClassHolder {
  explicit BlockHolder(Block b) : block(std::move(b)) {}
  Block block;
};

class Recompute : public torch::autograd::Function<Recompute> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, Block block) {
    ctx->save_for_backward({x});
    at::Tensor y = block(x);  // autograd is off inside a Function's forward
    ctx->saved_data["block"] =
        c10::IValue::make_capsule(c10::make_intrusive<BlockHolder>(std::move(block)));
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor input = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    const auto holder =
        c10::static_intrusive_pointer_cast<BlockHolder>(ctx->saved_data["block"].toCapsule());
    at::Tensor y;
    {
      torch::AutoGradMode enable(true);
      y = holder->block(input);
    }
    torch::autograd::backward({y}, {grads[0]});
    return {input.grad(), at::Tensor()};
  }
};

}  // namespace

at::Tensor recompute_in_backward(Block block, const at::Tensor& x) {
  if (!x.requires_grad()) {
    throw Error(describe("activation checkpointing", "input", "a tensor that requires grad",
                         "one that does not"));
  }
  return Recompute::apply(x, std::move(block));
}

}  // namespace vilau
