// NumPy .npy files: write (version 1.0, little-endian, C order, atomic) and read (versions 1.0/2.0/3.0).
//
// Dtypes: F32 '<f4', F64 '<f8', F16 '<f2', I64 '<i8', I32 '<i4', I16 '<i2', I8 '|i1', U8 '|u1', BOOL '|b1'.
// BF16 has no NumPy type: it is stored as its raw bits, '<u2', and a '<u2' file reads back as BF16.
// FP8 tensors are refused (convert with Tensor::to_f32 first). Reading validates the magic, the header
// dict (exactly 'descr', 'fortran_order', 'shape'), the dtype and that the file holds exactly the bytes
// the shape needs; every error names the file. Used for logits dumps and test fixtures.
#pragma once
#include <string>

#include "core/tensor.h"

namespace dsv3::io {

void write_npy(const std::string& path, const Tensor& t);  // atomic (io/atomic_file.h)
Tensor read_npy(const std::string& path);

}  // namespace dsv3::io
