// Precompiled for every vilau target: LibTorch's headers dominate compile time.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>
