#include "vilau/eval/inception.h"

#include <torch/torch.h>

#include <utility>

#include "vilau/core/error.h"
#include "vilau/io/safetensors.h"
#include "vilau/model/load_module.h"
#include "vilau/vision/preprocess.h"

namespace vilau::eval {

namespace {

using torch::ExpandingArray;

// torchvision's BasicConv2d: a bias-free convolution, BatchNorm with the TF graph's
// epsilon 0.001, ReLU. Always in eval mode, so the running statistics are used.
class BasicConvImpl : public torch::nn::Module {
 public:
  BasicConvImpl(int64_t in, int64_t out, ExpandingArray<2> kernel, ExpandingArray<2> stride,
                ExpandingArray<2> padding)
      : conv(register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                                                           .stride(stride)
                                                           .padding(padding)
                                                           .bias(false)))),
        bn(register_module(
            "bn", torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(out).eps(0.001)))) {}
  at::Tensor forward(const at::Tensor& x) { return torch::relu(bn(conv(x))); }

  torch::nn::Conv2d conv;
  torch::nn::BatchNorm2d bn;
};
TORCH_MODULE(BasicConv);

class Block : public torch::nn::Module {
 protected:
  BasicConv conv(const std::string& name, int64_t in, int64_t out, ExpandingArray<2> kernel,
                 ExpandingArray<2> stride = 1, ExpandingArray<2> padding = 0) {
    return register_module(name, BasicConv(in, out, kernel, stride, padding));
  }
};

// TF's average pool divides by the number of pixels inside the image, not the window size.
at::Tensor tf_average_pool(const at::Tensor& x) {
  return torch::avg_pool2d(x, 3, 1, 1, /*ceil_mode=*/false, /*count_include_pad=*/false);
}

// Mixed_5b..5d (FIDInceptionA).
class InceptionA : public Block {
 public:
  InceptionA(int64_t in, int64_t pool_features)
      : b1(conv("branch1x1", in, 64, 1)),
        b5_1(conv("branch5x5_1", in, 48, 1)),
        b5_2(conv("branch5x5_2", 48, 64, 5, 1, 2)),
        d_1(conv("branch3x3dbl_1", in, 64, 1)),
        d_2(conv("branch3x3dbl_2", 64, 96, 3, 1, 1)),
        d_3(conv("branch3x3dbl_3", 96, 96, 3, 1, 1)),
        pool(conv("branch_pool", in, pool_features, 1)) {}
  at::Tensor forward(const at::Tensor& x) {
    return torch::cat({b1(x), b5_2(b5_1(x)), d_3(d_2(d_1(x))), pool(tf_average_pool(x))}, 1);
  }

 private:
  BasicConv b1, b5_1, b5_2, d_1, d_2, d_3, pool;
};

// Mixed_6a (torchvision's InceptionB, unchanged in pytorch-fid).
class InceptionB : public Block {
 public:
  explicit InceptionB(int64_t in)
      : b3(conv("branch3x3", in, 384, 3, 2)),
        d_1(conv("branch3x3dbl_1", in, 64, 1)),
        d_2(conv("branch3x3dbl_2", 64, 96, 3, 1, 1)),
        d_3(conv("branch3x3dbl_3", 96, 96, 3, 2)) {}
  at::Tensor forward(const at::Tensor& x) {
    return torch::cat({b3(x), d_3(d_2(d_1(x))), torch::max_pool2d(x, 3, 2)}, 1);
  }

 private:
  BasicConv b3, d_1, d_2, d_3;
};

// Mixed_6b..6e (FIDInceptionC): factorised 7x7 convolutions.
class InceptionC : public Block {
 public:
  InceptionC(int64_t in, int64_t c7)
      : b1(conv("branch1x1", in, 192, 1)),
        b7_1(conv("branch7x7_1", in, c7, 1)),
        b7_2(conv("branch7x7_2", c7, c7, {1, 7}, 1, {0, 3})),
        b7_3(conv("branch7x7_3", c7, 192, {7, 1}, 1, {3, 0})),
        d_1(conv("branch7x7dbl_1", in, c7, 1)),
        d_2(conv("branch7x7dbl_2", c7, c7, {7, 1}, 1, {3, 0})),
        d_3(conv("branch7x7dbl_3", c7, c7, {1, 7}, 1, {0, 3})),
        d_4(conv("branch7x7dbl_4", c7, c7, {7, 1}, 1, {3, 0})),
        d_5(conv("branch7x7dbl_5", c7, 192, {1, 7}, 1, {0, 3})),
        pool(conv("branch_pool", in, 192, 1)) {}
  at::Tensor forward(const at::Tensor& x) {
    return torch::cat(
        {b1(x), b7_3(b7_2(b7_1(x))), d_5(d_4(d_3(d_2(d_1(x))))), pool(tf_average_pool(x))}, 1);
  }

 private:
  BasicConv b1, b7_1, b7_2, b7_3, d_1, d_2, d_3, d_4, d_5, pool;
};

// Mixed_7a (torchvision's InceptionD, unchanged in pytorch-fid).
class InceptionD : public Block {
 public:
  explicit InceptionD(int64_t in)
      : b3_1(conv("branch3x3_1", in, 192, 1)),
        b3_2(conv("branch3x3_2", 192, 320, 3, 2)),
        b7_1(conv("branch7x7x3_1", in, 192, 1)),
        b7_2(conv("branch7x7x3_2", 192, 192, {1, 7}, 1, {0, 3})),
        b7_3(conv("branch7x7x3_3", 192, 192, {7, 1}, 1, {3, 0})),
        b7_4(conv("branch7x7x3_4", 192, 192, 3, 2)) {}
  at::Tensor forward(const at::Tensor& x) {
    return torch::cat({b3_2(b3_1(x)), b7_4(b7_3(b7_2(b7_1(x)))), torch::max_pool2d(x, 3, 2)}, 1);
  }

 private:
  BasicConv b3_1, b3_2, b7_1, b7_2, b7_3, b7_4;
};

// Mixed_7b (FIDInceptionE_1, TF's average pool) and Mixed_7c (FIDInceptionE_2: the TF graph
// has a max pool in this block's pooling branch).
class InceptionE : public Block {
 public:
  InceptionE(int64_t in, bool max_pool)
      : max_pool_(max_pool),
        b1(conv("branch1x1", in, 320, 1)),
        b3_1(conv("branch3x3_1", in, 384, 1)),
        b3_2a(conv("branch3x3_2a", 384, 384, {1, 3}, 1, {0, 1})),
        b3_2b(conv("branch3x3_2b", 384, 384, {3, 1}, 1, {1, 0})),
        d_1(conv("branch3x3dbl_1", in, 448, 1)),
        d_2(conv("branch3x3dbl_2", 448, 384, 3, 1, 1)),
        d_3a(conv("branch3x3dbl_3a", 384, 384, {1, 3}, 1, {0, 1})),
        d_3b(conv("branch3x3dbl_3b", 384, 384, {3, 1}, 1, {1, 0})),
        pool(conv("branch_pool", in, 192, 1)) {}
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor b3 = b3_1(x), d = d_2(d_1(x));
    const at::Tensor pooled = max_pool_ ? torch::max_pool2d(x, 3, 1, 1) : tf_average_pool(x);
    return torch::cat({b1(x), b3_2a(b3), b3_2b(b3), d_3a(d), d_3b(d), pool(pooled)}, 1);
  }

 private:
  bool max_pool_;
  BasicConv b1, b3_1, b3_2a, b3_2b, d_1, d_2, d_3a, d_3b, pool;
};

template <class M, class... Args>
std::shared_ptr<M> add(torch::nn::Module& parent, const std::string& name, Args&&... args) {
  return parent.register_module(name, std::make_shared<M>(std::forward<Args>(args)...));
}

}  // namespace

struct FidInception::Impl : torch::nn::Module {
  Impl()
      : conv_1a(register_module("Conv2d_1a_3x3", BasicConv(3, 32, 3, 2, 0))),
        conv_2a(register_module("Conv2d_2a_3x3", BasicConv(32, 32, 3, 1, 0))),
        conv_2b(register_module("Conv2d_2b_3x3", BasicConv(32, 64, 3, 1, 1))),
        conv_3b(register_module("Conv2d_3b_1x1", BasicConv(64, 80, 1, 1, 0))),
        conv_4a(register_module("Conv2d_4a_3x3", BasicConv(80, 192, 3, 1, 0))),
        mixed_5b(add<InceptionA>(*this, "Mixed_5b", 192, 32)),
        mixed_5c(add<InceptionA>(*this, "Mixed_5c", 256, 64)),
        mixed_5d(add<InceptionA>(*this, "Mixed_5d", 288, 64)),
        mixed_6a(add<InceptionB>(*this, "Mixed_6a", 288)),
        mixed_6b(add<InceptionC>(*this, "Mixed_6b", 768, 128)),
        mixed_6c(add<InceptionC>(*this, "Mixed_6c", 768, 160)),
        mixed_6d(add<InceptionC>(*this, "Mixed_6d", 768, 160)),
        mixed_6e(add<InceptionC>(*this, "Mixed_6e", 768, 192)),
        mixed_7a(add<InceptionD>(*this, "Mixed_7a", 768)),
        mixed_7b(add<InceptionE>(*this, "Mixed_7b", 1280, false)),
        mixed_7c(add<InceptionE>(*this, "Mixed_7c", 2048, true)) {
    eval();
  }

  at::Tensor forward(at::Tensor x) {
    x = conv_2b(conv_2a(conv_1a(x)));
    x = conv_4a(conv_3b(torch::max_pool2d(x, 3, 2)));
    x = torch::max_pool2d(x, 3, 2);
    x = mixed_5d->forward(mixed_5c->forward(mixed_5b->forward(x)));
    x = mixed_6a->forward(x);
    x = mixed_6e->forward(mixed_6d->forward(mixed_6c->forward(mixed_6b->forward(x))));
    x = mixed_7c->forward(mixed_7b->forward(mixed_7a->forward(x)));
    return torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1);
  }

  at::Device device = at::kCPU;
  BasicConv conv_1a, conv_2a, conv_2b, conv_3b, conv_4a;
  std::shared_ptr<InceptionA> mixed_5b, mixed_5c, mixed_5d;
  std::shared_ptr<InceptionB> mixed_6a;
  std::shared_ptr<InceptionC> mixed_6b, mixed_6c, mixed_6d, mixed_6e;
  std::shared_ptr<InceptionD> mixed_7a;
  std::shared_ptr<InceptionE> mixed_7b, mixed_7c;
};

at::Tensor clean_fid_resize(const at::Tensor& rgb) {
  if (rgb.dim() != 3 || rgb.size(2) != 3 || rgb.scalar_type() != torch::kUInt8) {
    throw ShapeError(
        describe("clean_fid_resize", "input", "RGB uint8 [H, W, 3]",
                 std::string(c10::toString(rgb.scalar_type())) + " " + c10::str(rgb.sizes())));
  }
  const at::Tensor resized =
      pil_bicubic_resize_float(rgb.cpu().to(torch::kFloat), kInceptionSize, kInceptionSize);
  return resized.clamp(0, 255).permute({2, 0, 1}).contiguous();
}

FidInception::FidInception(at::Device device) : impl_(std::make_shared<Impl>()) {
  impl_->to(device);
  impl_->device = device;
}

FidInception FidInception::load(const std::string& path, at::Device device) {
  FidInception model(device);
  const io::SafetensorsFile file = io::SafetensorsFile::open(path);
  const TensorLookup lookup = [&file](const std::string& name) {
    return file.find(name) != nullptr ? file.tensor(name) : at::Tensor();
  };
  try {
    load_module(*model.impl_, lookup, "");
  } catch (const ShapeError& e) {
    throw ShapeError(path + ": " + e.what());
  }
  return model;
}

at::Tensor FidInception::forward(const at::Tensor& pixels) const {
  if (pixels.dim() != 4 || pixels.size(1) != 3) {
    throw ShapeError(describe("FidInception", "pixels", "[B, 3, 299, 299] in [0, 255]",
                              c10::str(pixels.sizes())));
  }
  torch::NoGradGuard no_grad;
  const at::Tensor x = pixels.to(impl_->device, torch::kFloat);
  return impl_->forward((x - 128.0) / 128.0);
}

std::map<std::string, at::Tensor> FidInception::named_tensors() const {
  std::map<std::string, at::Tensor> out;
  add_module_tensors(out, "", *impl_);
  return out;
}

at::Device FidInception::device() const { return impl_->device; }

}  // namespace vilau::eval
