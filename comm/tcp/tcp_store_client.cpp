// The client side of the tcp store: a Store whose calls are requests to a TcpStoreServer. One
// request at a time per connection; every network wait has a deadline.
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/tcp/asio.h"
#include "comm/tcp/host_port.h"
#include "comm/tcp/store_protocol.h"
#include "comm/tcp/tcp_store.h"

namespace tern {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using net::StoreOp;
using net::StoreRequest;
using net::StoreResponse;
using net::StoreStatus;

// How long past a get's own timeout the client waits for the server's "timed out" answer.
constexpr std::chrono::milliseconds kReplySlack{5000};

std::string ms_text(std::chrono::milliseconds ms) { return std::to_string(ms.count()) + " ms"; }

// One connection to the server with the io_context that runs its operations.
class StoreConnection {
 public:
  StoreConnection(const tcp::endpoint& endpoint, const std::string& address_text, Clock::time_point deadline,
                  std::chrono::milliseconds timeout)
      : address_text_(address_text) {
    boost::system::error_code last_error;
    for (;;) {  // the server may not be listening yet
      socket_.emplace(io_);
      last_error = run_until(deadline, [&](auto done) { socket_->async_connect(endpoint, done); });
      if (!last_error) {
        boost::system::error_code ignored;
        socket_->set_option(tcp::no_delay(true), ignored);
        return;
      }
      if (Clock::now() + std::chrono::milliseconds(50) >= deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    throw CommError("cannot connect to the tcp store at " + address_text + " within " + ms_text(timeout) +
                    ": " + last_error.message());
  }

  // Sends the request and reads the response by `deadline`. A failure leaves the connection
  // unusable (the caller drops it).
  StoreResponse call(const StoreRequest& request, Clock::time_point deadline,
                     std::chrono::milliseconds reply_within, const std::string& what) {
    const std::string bytes = net::encode_request(request);
    std::array<uint8_t, 4> prefix{};
    std::string body;
    boost::system::error_code ec = run_until(deadline, [&](auto done) {
      asio::async_write(*socket_, asio::buffer(bytes), [&, done](auto write_ec, size_t) {
        if (write_ec) return done(write_ec);
        asio::async_read(*socket_, asio::buffer(prefix), [&, done](auto read_ec, size_t) {
          if (read_ec) return done(read_ec);
          const uint32_t body_bytes = net::decode_length_prefix(prefix);
          if (body_bytes > net::kMaxStoreBodyBytes) return done(asio::error::message_size);
          body.resize(body_bytes);
          asio::async_read(*socket_, asio::buffer(body), [done](auto body_ec, size_t) { done(body_ec); });
        });
      });
    });
    std::optional<StoreResponse> response;
    if (!ec) response = net::decode_response(body);
    if (!response) {
      const std::string reason = ec == asio::error::timed_out ? "no answer within " + ms_text(reply_within)
                                 : ec                         ? ec.message()
                                                              : std::string("malformed response");
      throw CommError("tcp store at " + address_text_ + ": " + what + " failed: " + reason);
    }
    return *response;
  }

 private:
  // Runs the asynchronous operation that `start` begins (it calls done(ec) when finished) until it
  // completes or `deadline` passes; then the socket is closed and timed_out returned.
  template <typename Start>
  boost::system::error_code run_until(Clock::time_point deadline, Start start) {
    std::optional<boost::system::error_code> result;
    auto done = [&result](boost::system::error_code ec) { result = ec; };
    start(done);
    io_.restart();
    io_.run_until(deadline);
    if (result) return *result;
    boost::system::error_code ignored;
    socket_->close(ignored);
    io_.restart();
    io_.run();  // lets the aborted handlers finish before their captures go out of scope
    return asio::error::timed_out;
  }

  std::string address_text_;
  asio::io_context io_;
  std::optional<tcp::socket> socket_;
};

// Requests from several threads proceed side by side, each on a connection of its own (a get may
// wait a long time for its key); idle connections are kept for the next request.
class TcpStoreClient : public Store {
 public:
  TcpStoreClient(const std::string& address, std::chrono::milliseconds timeout)
      : address_text_(address), timeout_(timeout) {
    const std::optional<net::HostPort> parsed = net::parse_host_port(address);
    if (!parsed) throw Error("tcp store address '" + address + "' is not host:port");
    asio::io_context resolver_io;
    endpoint_ = net::resolve_endpoint(resolver_io, *parsed, "tcp store at " + address);
    idle_.push_back(open_connection());
  }

  void set(const std::string& key, const std::string& value) override {
    const std::string what = "set of key '" + key + "'";
    check_ok(call(StoreRequest{StoreOp::set, key, value, 0}, timeout_, what), what);
  }

  std::string get(const std::string& key, std::chrono::milliseconds timeout) override {
    const std::string what = "get of key '" + key + "'";
    StoreRequest request{StoreOp::get, key, "", std::max<int64_t>(0, timeout.count())};
    const StoreResponse response = call(request, timeout + kReplySlack, what);
    if (response.status == StoreStatus::timed_out) {
      throw CommError("tcp store at " + address_text_ + ": " + what + " timed out after " + ms_text(timeout) +
                      " (the key was never set)");
    }
    check_ok(response, what);
    return response.value;
  }

  int64_t add(const std::string& key, int64_t delta) override {
    const std::string what = "add to key '" + key + "'";
    const StoreResponse response = call(StoreRequest{StoreOp::add, key, "", delta}, timeout_, what);
    check_ok(response, what);
    return std::stoll(response.value);
  }

 private:
  std::unique_ptr<StoreConnection> open_connection() {
    return std::make_unique<StoreConnection>(endpoint_, address_text_, Clock::now() + timeout_, timeout_);
  }

  void check_ok(const StoreResponse& response, const std::string& what) const {
    if (response.status == StoreStatus::failed)
      throw Error("tcp store at " + address_text_ + ": " + response.value);
    if (response.status != StoreStatus::ok) {
      throw CommError("tcp store at " + address_text_ + ": unexpected answer to " + what);
    }
  }

  StoreResponse call(const StoreRequest& request, std::chrono::milliseconds reply_within,
                     const std::string& what) {
    std::unique_ptr<StoreConnection> connection;
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        connection = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    if (!connection) connection = open_connection();
    // On failure the connection is dropped with the exception; the next call dials afresh.
    StoreResponse response = connection->call(request, Clock::now() + reply_within, reply_within, what);
    std::lock_guard lock(mu_);
    idle_.push_back(std::move(connection));
    return response;
  }

  std::string address_text_;
  std::chrono::milliseconds timeout_;
  tcp::endpoint endpoint_;
  std::mutex mu_;  // guards idle_
  std::vector<std::unique_ptr<StoreConnection>> idle_;
};

}  // namespace

std::shared_ptr<Store> connect_tcp_store(const std::string& address, std::chrono::milliseconds timeout) {
  return std::make_shared<TcpStoreClient>(address, timeout);
}

}  // namespace tern
