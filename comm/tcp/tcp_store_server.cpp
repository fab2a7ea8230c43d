// TcpStoreServer: one Asio thread serves every client. A get for a missing key parks its session
// until a set/add creates the key or the client's timeout passes, so waiting costs no thread.
#include <charconv>
#include <iostream>
#include <map>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/tcp/asio.h"
#include "comm/tcp/host_port.h"
#include "comm/tcp/store_protocol.h"
#include "comm/tcp/tcp_store.h"
#include "comm/thread_name.h"

namespace tern {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using net::StoreOp;
using net::StoreRequest;
using net::StoreResponse;
using net::StoreStatus;

namespace {

class Session;

// What the sessions share: the data and who waits for which key. Touched only on the io thread.
struct StoreState {
  std::map<std::string, std::string> data;
  std::multimap<std::string, std::weak_ptr<Session>> waiters;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, StoreState& state)
      : socket_(std::move(socket)), wait_timer_(socket_.get_executor()), state_(state) {}

  void start() { read_request(); }

  // Called on the io thread when `key` was just created or changed.
  void key_ready(const std::string& key) {
    if (!waiting_ || key != waiting_key_) return;
    waiting_ = false;
    wait_timer_.cancel();
    respond({StoreStatus::ok, state_.data[key]});
  }

 private:
  void read_request() {
    asio::async_read(socket_, asio::buffer(prefix_), [self = shared_from_this()](auto ec, size_t) {
      if (ec) return;  // the client went away: the session ends with its last handler
      const uint32_t body_bytes = net::decode_length_prefix(self->prefix_);
      if (body_bytes > net::kMaxStoreBodyBytes) {
        return self->drop("request of " + std::to_string(body_bytes) + " bytes is above the limit");
      }
      self->body_.resize(body_bytes);
      asio::async_read(self->socket_, asio::buffer(self->body_), [self](auto ec2, size_t) {
        if (!ec2) self->handle(self->body_);
      });
    });
  }

  void handle(const std::string& body) {
    const std::optional<StoreRequest> request = net::decode_request(body);
    if (!request) return drop("malformed request");
    switch (request->op) {
      case StoreOp::set:
        state_.data[request->key] = request->value;
        respond({StoreStatus::ok, ""});
        wake_waiters(request->key);
        return;
      case StoreOp::add: {
        int64_t current = 0;
        if (const auto it = state_.data.find(request->key); it != state_.data.end()) {
          const std::string& text = it->second;
          const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), current);
          if (error != std::errc() || end != text.data() + text.size()) {
            return respond({StoreStatus::failed,
                            "add to key '" + request->key + "': its value '" + text + "' is not an integer"});
          }
        }
        const std::string updated = std::to_string(current + request->number);
        state_.data[request->key] = updated;
        respond({StoreStatus::ok, updated});
        wake_waiters(request->key);
        return;
      }
      case StoreOp::get:
        if (const auto it = state_.data.find(request->key); it != state_.data.end()) {
          return respond({StoreStatus::ok, it->second});
        }
        if (request->number == 0) return respond({StoreStatus::timed_out, ""});
        park(request->key, std::chrono::milliseconds(request->number));
        return;
    }
  }

  void park(const std::string& key, std::chrono::milliseconds timeout) {
    waiting_ = true;
    waiting_key_ = key;
    const uint64_t wait_id = ++wait_count_;
    state_.waiters.emplace(key, weak_from_this());
    wait_timer_.expires_after(timeout);
    wait_timer_.async_wait([self = shared_from_this(), wait_id](auto) {
      if (!self->waiting_ || wait_id != self->wait_count_) return;  // answered by a set meanwhile
      self->waiting_ = false;
      self->respond({StoreStatus::timed_out, ""});
    });
  }

  void wake_waiters(const std::string& key) {
    const auto [first, last] = state_.waiters.equal_range(key);
    std::vector<std::shared_ptr<Session>> ready;
    for (auto it = first; it != last; ++it) {
      if (auto session = it->second.lock()) ready.push_back(std::move(session));
    }
    state_.waiters.erase(first, last);
    for (auto& session : ready) session->key_ready(key);
  }

  void respond(const StoreResponse& response) {
    reply_ = net::encode_response(response);
    asio::async_write(socket_, asio::buffer(reply_), [self = shared_from_this()](auto ec, size_t) {
      if (!ec) self->read_request();
    });
  }

  void drop(const std::string& reason) {
    boost::system::error_code ec;
    const auto peer = socket_.remote_endpoint(ec);
    std::cerr << "tern store: closing the connection from "
              << (ec ? std::string("?") : peer.address().to_string()) << ": " << reason << "\n";
    socket_.close(ec);
  }

  tcp::socket socket_;
  asio::steady_timer wait_timer_;
  StoreState& state_;
  std::array<uint8_t, 4> prefix_{};
  std::string body_;
  std::string reply_;
  bool waiting_ = false;
  std::string waiting_key_;
  uint64_t wait_count_ = 0;
};

}  // namespace

struct TcpStoreServer::Impl {
  asio::io_context io;  // first member: destroyed last, after everything that refers to it
  tcp::acceptor acceptor{io};
  StoreState state;
  std::string host;
  uint16_t port = 0;
  std::thread thread;

  void accept_next() {
    acceptor.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) {
        socket.set_option(tcp::no_delay(true), ec);
        std::make_shared<Session>(std::move(socket), state)->start();
      }
      accept_next();
    });
  }

  void serve() {
    for (;;) {
      try {
        io.run();
        return;
      } catch (const std::exception& e) {  // a handler failed (out of memory): keep serving the others
        std::cerr << "tern store: " << e.what() << "\n";
      }
    }
  }
};

TcpStoreServer::TcpStoreServer(const std::string& host, uint16_t port) : impl_(std::make_unique<Impl>()) {
  const std::string where = "tcp store server on " + net::format_host_port(host, port);
  const tcp::endpoint endpoint = net::resolve_endpoint(impl_->io, {host, port}, where);
  boost::system::error_code ec;
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(endpoint, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw CommError(where + ": cannot listen: " + ec.message());
  impl_->host = host;
  impl_->port = impl_->acceptor.local_endpoint().port();
  impl_->accept_next();
  impl_->thread = std::thread([impl = impl_.get()] { impl->serve(); });
  name_thread(impl_->thread, "tern-store");
}

TcpStoreServer::~TcpStoreServer() {
  impl_->io.stop();
  impl_->thread.join();
}

uint16_t TcpStoreServer::port() const { return impl_->port; }

std::string TcpStoreServer::address() const { return net::format_host_port(impl_->host, impl_->port); }

}  // namespace tern
