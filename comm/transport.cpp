#include "comm/transport.h"

#include <cstring>

#include "comm/reduce.h"

namespace tern {

namespace {

// Transport::post_recv_reduce's default: a posted recv into scratch of its own, reduced into the
// caller's buffer by wait().
class ScratchReducingRecv final : public PostedRecv {
 public:
  ScratchReducingRecv(Transport& transport, int src, uint64_t context, uint64_t tag, void* data, size_t bytes,
                      RecvReduction how)
      : PostedRecv(bytes),
        data_(data),
        how_(how),
        scratch_(new char[bytes]),  // no value-initialisation: the message overwrites it
        recv_(transport.post_recv(src, context, tag, scratch_.get(), bytes)) {}

  void wait(std::chrono::milliseconds timeout) override {
    recv_->wait(timeout);
    land_message(data_, scratch_.get(), bytes(), how_);
  }

 private:
  void* data_;
  RecvReduction how_;
  std::unique_ptr<char[]> scratch_;
  std::unique_ptr<PostedRecv> recv_;  // declared after scratch_: un-posted before it is freed
};

}  // namespace

void check_reducing_recv(size_t bytes, RecvReduction how) {
  check_reduce_dtype(how.dtype, "a reducing recv");
  TERN_CHECK(bytes % dtype_size(how.dtype) == 0, "a reducing recv of ", bytes, " bytes is not a whole number of ",
             dtype_name(how.dtype), " elements");
}

void land_message(void* data, const void* message, size_t bytes, const std::optional<RecvReduction>& how) {
  if (how) {
    reduce_into(data, message, static_cast<int64_t>(bytes / dtype_size(how->dtype)), how->dtype, how->op);
  } else if (bytes > 0) {
    std::memcpy(data, message, bytes);
  }
}

std::unique_ptr<PostedRecv> Transport::post_recv_reduce(int src, uint64_t context, uint64_t tag, void* data,
                                                        size_t bytes, RecvReduction how) {
  check_reducing_recv(bytes, how);
  return std::make_unique<ScratchReducingRecv>(*this, src, context, tag, data, bytes, how);
}

}  // namespace tern
