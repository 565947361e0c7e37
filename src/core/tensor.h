// Tensor: a dtype, a row-major shape and a pointer to bytes kept alive by a shared holder.
//
// The holder is either an owned 64-byte-aligned allocation (Tensor::empty / zeros) or something else that
// keeps memory valid (an mmap of a safetensors file). Copies share storage; clone() deep-copies.
// Shapes are PyTorch order ([out, in] for Linear weights). No strides: views are contiguous slices.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace dsv3 {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);
int64_t shape_numel(const Shape& s);

struct Tensor {
  DType dtype = DType::F32;
  Shape shape;
  void* data = nullptr;
  std::shared_ptr<void> holder;

  static Tensor empty(const Shape& shape, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32);
  // A non-owning tensor over memory that `holder` keeps alive.
  static Tensor wrap(void* data, const Shape& shape, DType dtype, std::shared_ptr<void> holder);

  int64_t numel() const { return shape_numel(shape); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape.at(i < 0 ? shape.size() + i : i); }
  bool defined() const { return data != nullptr || (holder && numel() == 0); }
  Tensor clone() const;
  // Same bytes, new shape (numel must match).
  Tensor reshape(const Shape& s) const;
  // F32 copy of any dtype.
  Tensor to_f32() const;

  float* f32() { return static_cast<float*>(data); }
  const float* f32() const { return static_cast<const float*>(data); }
  template <typename T>
  T* ptr() { return static_cast<T*>(data); }
  template <typename T>
  const T* ptr() const { return static_cast<const T*>(data); }
};

}  // namespace dsv3
