#include "runtime/data/fashion_mnist.h"

#include <filesystem>
#include <string>

#include "runtime/data/idx.h"
#include "runtime/error.h"

namespace tern {
namespace {

// The release ships gzip-compressed files; a user may have unpacked them. Prefer the .gz.
std::string find_file(const std::string& dir, const std::string& base) {
  namespace fs = std::filesystem;
  const fs::path gz = fs::path(dir) / (base + ".gz"), plain = fs::path(dir) / base;
  if (fs::exists(gz)) return gz.string();
  if (fs::exists(plain)) return plain.string();
  TERN_CHECK(fs::is_directory(dir), "load_fashion_mnist: directory '", dir,
             "' does not exist (install the Debian package dataset-fashion-mnist, or pass the "
             "directory holding the Fashion-MNIST IDX files)");
  throw Error("load_fashion_mnist: neither " + gz.string() + " nor " + plain.string() +
              " exists (is '" + dir + "' a Fashion-MNIST directory?)");
}

}  // namespace

Dataset load_fashion_mnist(const std::string& dir, Split split) {
  const std::string prefix = split == Split::train ? "train" : "t10k";
  const std::string image_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string label_path = find_file(dir, prefix + "-labels-idx1-ubyte");
  const IdxArray images = read_idx(image_path);
  const IdxArray labels = read_idx(label_path);

  TERN_CHECK(images.type_code == kIdxU8 && images.dims.size() == 3,
             "load_fashion_mnist: ", image_path, ": expected 3-D u8 images [N, 28, 28], got ",
             images.dims.size(), "-D with type code ", int{images.type_code});
  TERN_CHECK(images.dims[1] == 28 && images.dims[2] == 28, "load_fashion_mnist: ", image_path,
             ": expected 28x28 images, got ", images.dims[1], "x", images.dims[2]);
  TERN_CHECK(labels.type_code == kIdxU8 && labels.dims.size() == 1,
             "load_fashion_mnist: ", label_path, ": expected 1-D u8 labels [N], got ",
             labels.dims.size(), "-D with type code ", int{labels.type_code});
  const int64_t n = images.dims[0];
  TERN_CHECK(labels.dims[0] == n, "load_fashion_mnist: ", image_path, " holds ", n, " images but ",
             label_path, " holds ", labels.dims[0], " labels");

  Dataset out;
  out.name = "fashion-mnist";
  out.num_classes = kFashionMnistClasses;
  out.labels.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t y = labels.bytes[static_cast<size_t>(i)];
    TERN_CHECK(y < kFashionMnistClasses, "load_fashion_mnist: ", label_path, ": label ", int{y},
               " at index ", i, " is not a class in 0..", kFashionMnistClasses - 1);
    out.labels[static_cast<size_t>(i)] = y;
  }

  // 256 possible pixel values: normalise through a table instead of per pixel.
  float table[256];
  for (int v = 0; v < 256; ++v)
    table[v] = (static_cast<float>(v) / 255.0f - kFashionMnistMean) / kFashionMnistStd;
  out.images = Tensor::empty({n, 1, 28, 28});
  float* dst = out.images.f32();
  const uint8_t* src = images.bytes.data();
  const size_t count = images.bytes.size();
  for (size_t i = 0; i < count; ++i) dst[i] = table[src[i]];
  return out;
}

}  // namespace tern
