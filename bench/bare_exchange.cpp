#include "bench/bare_exchange.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

namespace tern {

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw Error("bare exchange: " + what + ": " + std::strerror(errno));
}

void tune(int fd, size_t socket_buffer_bytes) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (socket_buffer_bytes == 0) return;
  const int bytes = static_cast<int>(std::min<size_t>(socket_buffer_bytes, INT32_MAX / 2));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

}  // namespace

BareExchange::BareExchange(Communicator& comm, size_t socket_buffer_bytes) {
  TERN_CHECK(comm.size() == 2, "bare exchange: needs 2 ranks, the job has ", comm.size());
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int listener = -1;
  if (comm.rank() == 0) {
    listener = ::socket(AF_INET, SOCK_STREAM, 0);
    socklen_t length = sizeof(address);
    if (listener < 0) fail("socket");
    tune(listener, socket_buffer_bytes);  // inherited by the accepted socket, before its handshake
    if (::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        ::listen(listener, 1) != 0 ||
        ::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      const int error = errno;
      ::close(listener);
      errno = error;
      fail("listen on 127.0.0.1");
    }
  }
  Tensor port = Tensor::from({1}, {static_cast<float>(ntohs(address.sin_port))});  // exact: ports < 2^24
  comm.broadcast(port, 0);
  if (comm.rank() == 0) {
    fd_ = ::accept(listener, nullptr, nullptr);  // rank 1 connects right after the broadcast
    ::close(listener);
    if (fd_ < 0) fail("accept");
  } else {
    address.sin_port = htons(static_cast<uint16_t>(port.f32()[0]));
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) fail("socket");
    tune(fd_, socket_buffer_bytes);  // before connecting: the window scale is agreed in the handshake
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0)
      fail("connect to rank 0");
  }
}

BareExchange::~BareExchange() {
  if (fd_ >= 0) ::close(fd_);
}

void BareExchange::exchange(const void* send, void* recv, size_t bytes) {
  const auto* out = static_cast<const char*>(send);
  auto* in = static_cast<char*>(recv);
  size_t sent = 0, received = 0;
  while (sent < bytes || received < bytes) {
    bool moved = false;
    if (sent < bytes) {
      const ssize_t n = ::send(fd_, out + sent, bytes - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<size_t>(n);
        moved = true;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        fail("send");
      }
    }
    if (received < bytes) {
      const ssize_t n = ::recv(fd_, in + received, bytes - received, MSG_DONTWAIT);
      if (n == 0) throw Error("bare exchange: the peer closed the connection");
      if (n > 0) {
        received += static_cast<size_t>(n);
        moved = true;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        fail("recv");
      }
    }
    if (moved) continue;
    pollfd entry{fd_, static_cast<short>((sent < bytes ? POLLOUT : 0) | (received < bytes ? POLLIN : 0)), 0};
    if (::poll(&entry, 1, 60000) == 0) throw Error("bare exchange: no progress for a minute");
  }
}

}  // namespace tern
