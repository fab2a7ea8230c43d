#include "comm/tcp/tcp_mesh.h"

#include <iostream>

#include "comm/communicator.h"
#include "comm/tcp/frame.h"
#include "comm/tcp/host_port.h"

namespace tern::net {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using ErrorCode = boost::system::error_code;

std::string rank_list(const std::vector<int>& ranks) {
  std::string text;
  for (int r : ranks) text += (text.empty() ? "" : ", ") + std::to_string(r);
  return text;
}

// One connection being opened, from either end; its buffers live as long as its handlers.
struct Link {
  std::unique_ptr<Socket> socket;
  int rank = -1;      // the peer's rank once known
  std::string where;  // the peer's address, for messages
  EncodedHeader header_in{};
  EncodedHeader header_out{};
  std::string job_id_in;
};

// The asynchronous part of connect_mesh. Handlers capture `this`: finish() closes everything and
// runs the io_context until every handler has returned, so none outlives the object.
class MeshSetup {
 public:
  MeshSetup(asio::io_context& io, const TcpWorld& world, std::chrono::milliseconds timeout)
      : io_(io),
        world_(world),
        timeout_(timeout),
        deadline_(Clock::now() + timeout),
        job_hash_(job_hash(world.job_id)),
        acceptor_(io),
        peers_(static_cast<size_t>(world.size)),
        claimed_(static_cast<size_t>(world.size), false) {}

  ~MeshSetup() {
    try {
      finish();
    } catch (const std::exception& e) {  // only a handler out of memory could get here
      std::cerr << "tern tcp: rank " << world_.rank << ": closing the setup's connections: " << e.what()
                << "\n";
    }
  }

  std::vector<std::unique_ptr<Socket>> run(Store& store) {
    if (world_.size == 1) return std::move(peers_);
    listen();
    const std::string generation_key =
        "tern/" + world_.job_id + "/tcp/worlds_created_by/" + std::to_string(world_.rank);
    generation_ = store.add(generation_key, 1);
    const std::string my_address = format_host_port(world_.listen_host, acceptor_.local_endpoint().port());
    store.set(address_key(world_.job_id, generation_, world_.rank), my_address);
    accept_next();

    std::vector<int> unpublished;
    std::string store_error;
    for (int peer = 0; peer < world_.rank; ++peer) {
      const auto left =
          std::max(std::chrono::milliseconds(0),
                   std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now()));
      try {
        connect_to(peer, store.get(address_key(world_.job_id, generation_, peer),
                                   unpublished.empty() ? left : std::chrono::milliseconds(0)));
      } catch (const CommError& e) {
        unpublished.push_back(peer);
        if (store_error.empty()) store_error = e.what();
      }
    }
    if (unpublished.empty()) {
      io_.restart();
      io_.run_until(deadline_);
    }
    finish();
    if (!failure_.empty()) throw CommError(failure_);
    if (!unpublished.empty() || connected_ < world_.size - 1) {
      std::string message = missing_ranks_message(store);
      // A store that failed (rather than a key that never appeared) is the likelier culprit.
      if (store_error.find("timed out") == std::string::npos && !store_error.empty()) {
        message += " (the store said: " + store_error + ")";
      }
      throw CommError(message);
    }
    return std::move(peers_);
  }

 private:
  void listen() {
    const std::string what = "rank " + std::to_string(world_.rank) + ": tcp listen on " + world_.listen_host;
    const tcp::endpoint endpoint = resolve_endpoint(io_, {world_.listen_host, 0}, what);
    ErrorCode ec;
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) throw CommError(what + ": " + ec.message());
  }

  FrameHeader my_handshake() const {
    FrameHeader header;
    header.kind = static_cast<uint16_t>(FrameKind::handshake);
    header.job_hash = job_hash_;
    header.context = static_cast<uint64_t>(world_.size);
    header.tag = static_cast<uint64_t>(world_.rank);
    header.payload_bytes = world_.job_id.size();
    return header;
  }

  // What is wrong with a peer's handshake header, apart from the rank it claims.
  std::string handshake_problem(const FrameHeader& header) const {
    std::string problem = frame_problem(header, FrameKind::handshake, job_hash_, 0, kMaxJobIdBytes);
    if (!problem.empty()) return problem;
    if (header.context != static_cast<uint64_t>(world_.size)) {
      return "world size " + std::to_string(header.context) + ", expected " + std::to_string(world_.size);
    }
    if (header.payload_bytes != world_.job_id.size()) {
      return "a job id of " + std::to_string(header.payload_bytes) + " bytes, expected " +
             std::to_string(world_.job_id.size());
    }
    return "";
  }

  template <typename Handler>
  void send_handshake(const std::shared_ptr<Link>& link, Handler handler) {
    link->header_out = encode_header(my_handshake());
    const std::array<asio::const_buffer, 3> buffers{
        asio::buffer(link->header_out), asio::buffer(world_.job_id),
        asio::buffer(kFramePadding, frame_padding(world_.job_id.size()))};
    asio::async_write(*link->socket, buffers, [link, handler](ErrorCode ec, size_t) { handler(ec); });
  }

  // Reads the peer's handshake into link; calls handler(problem) ("" when well-formed and of this
  // job). `check_rank` adds what the rank it claims must satisfy.
  template <typename CheckRank, typename Handler>
  void read_handshake(const std::shared_ptr<Link>& link, CheckRank check_rank, Handler handler) {
    asio::async_read(*link->socket, asio::buffer(link->header_in),
                     [this, link, check_rank, handler](ErrorCode ec, size_t) {
                       if (finished_) return;
                       if (ec)
                         return handler(ec == asio::error::eof
                                            ? std::string("closed the connection before its handshake")
                                            : "failed before its handshake: " + ec.message());
                       const FrameHeader header = decode_header(link->header_in.data());
                       std::string problem = handshake_problem(header);
                       if (problem.empty()) problem = check_rank(header.tag);
                       if (!problem.empty()) return handler("bad handshake: " + problem);
                       link->rank = static_cast<int>(header.tag);
                       // the job id and its padding; the padding is dropped once read
                       link->job_id_in.resize(header.payload_bytes + frame_padding(header.payload_bytes));
                       asio::async_read(*link->socket, asio::buffer(link->job_id_in),
                                        [this, link, handler, header](ErrorCode ec2, size_t) {
                                          if (finished_) return;
                                          if (ec2)
                                            return handler("failed during its handshake: " + ec2.message());
                                          link->job_id_in.resize(header.payload_bytes);
                                          if (link->job_id_in != world_.job_id) {
                                            return handler("bad handshake: job id '" + link->job_id_in +
                                                           "', expected '" + world_.job_id + "'");
                                          }
                                          handler(std::string());
                                        });
                     });
  }

  void accept_next() {
    auto link = std::make_shared<Link>();
    link->socket = std::make_unique<Socket>(io_);
    acceptor_.async_accept(*link->socket, [this, link](ErrorCode ec) {
      if (finished_) return;
      if (ec)
        return fail("rank " + std::to_string(world_.rank) +
                    ": accepting tcp connections failed: " + ec.message());
      ErrorCode ignored;
      const tcp::endpoint remote = link->socket->remote_endpoint(ignored);
      link->where = format_host_port(remote.address().to_string(), remote.port());
      link->socket->set_option(tcp::no_delay(true), ignored);
      links_.push_back(link);
      answer(link);
      accept_next();
    });
  }

  // The accepting end: check the stranger's handshake, then answer with ours.
  void answer(const std::shared_ptr<Link>& link) {
    const int me = world_.rank;
    auto check_rank = [this, me](uint64_t rank) -> std::string {
      if (rank <= static_cast<uint64_t>(me) || rank >= static_cast<uint64_t>(world_.size)) {
        return "claims rank " + std::to_string(rank) + ", but only ranks " + std::to_string(me + 1) + ".." +
               std::to_string(world_.size - 1) + " connect to rank " + std::to_string(me);
      }
      if (claimed_[rank]) return "claims rank " + std::to_string(rank) + ", which is already connected";
      return "";
    };
    read_handshake(link, check_rank, [this, link](const std::string& problem) {
      if (!problem.empty()) return reject(*link, problem);
      claimed_[static_cast<size_t>(link->rank)] = true;
      send_handshake(link, [this, link](ErrorCode ec) {
        if (finished_) return;
        if (ec) {
          return fail("rank " + std::to_string(world_.rank) + ": answering the handshake of rank " +
                      std::to_string(link->rank) + " at " + link->where + " failed: " + ec.message());
        }
        complete(*link);
      });
    });
  }

  // The connecting end: dial the lower rank, introduce ourselves, check its answer.
  void connect_to(int peer, const std::string& address) {
    auto link = std::make_shared<Link>();
    link->rank = peer;
    link->where = address;
    link->socket = std::make_unique<Socket>(io_);
    links_.push_back(link);
    const std::string what = "rank " + std::to_string(world_.rank) + ": connecting to rank " +
                             std::to_string(peer) + " at " + address;
    const std::optional<HostPort> parsed = parse_host_port(address);
    if (!parsed) return fail(what + ": the address it published is not host:port");
    tcp::endpoint endpoint;
    try {
      endpoint = resolve_endpoint(io_, *parsed, what);
    } catch (const CommError& e) {
      return fail(e.what());
    }
    link->socket->async_connect(endpoint, [this, link, peer, what](ErrorCode ec) {
      if (finished_) return;
      if (ec) return fail(what + ": " + ec.message());
      ErrorCode ignored;
      link->socket->set_option(tcp::no_delay(true), ignored);
      send_handshake(link, [this, link, peer, what](ErrorCode ec2) {
        if (finished_) return;
        if (ec2) return fail(what + ": sending the handshake failed: " + ec2.message());
        auto check_rank = [peer](uint64_t rank) -> std::string {
          if (rank == static_cast<uint64_t>(peer)) return "";
          return "answered as rank " + std::to_string(rank);
        };
        read_handshake(link, check_rank, [this, link, what](const std::string& problem) {
          if (!problem.empty()) return fail(what + ": the peer " + problem);
          complete(*link);
        });
      });
    });
  }

  void complete(Link& link) {
    peers_[static_cast<size_t>(link.rank)] = std::move(link.socket);
    if (++connected_ == world_.size - 1) io_.stop();
  }

  void reject(Link& link, const std::string& reason) {
    std::cerr << "tern tcp: rank " << world_.rank << " rejected a connection from " << link.where << ": "
              << reason << "\n";
    ErrorCode ignored;
    link.socket->close(ignored);
  }

  void fail(const std::string& message) {
    if (failure_.empty()) failure_ = message;
    io_.stop();
  }

  // Closes whatever is still being opened and lets every handler run to its end.
  void finish() {
    if (finished_) return;
    finished_ = true;
    ErrorCode ignored;
    acceptor_.close(ignored);
    for (auto& link : links_) {
      if (link->socket) link->socket->close(ignored);
    }
    io_.restart();
    io_.run();
    links_.clear();
  }

  std::string missing_ranks_message(Store& store) const {
    std::vector<int> never_arrived, unconnected;
    for (int peer = 0; peer < world_.size; ++peer) {
      if (peer == world_.rank || peers_[static_cast<size_t>(peer)]) continue;
      bool published = true;
      try {
        store.get(address_key(world_.job_id, generation_, peer), std::chrono::milliseconds(0));
      } catch (const CommError&) {
        published = false;
      }
      (published ? unconnected : never_arrived).push_back(peer);
    }
    std::string message = "rank " + std::to_string(world_.rank) + ": tcp setup of job '" + world_.job_id +
                          "' timed out after " + std::to_string(timeout_.count()) + " ms:";
    if (!never_arrived.empty()) message += " rank(s) " + rank_list(never_arrived) + " never arrived;";
    if (!unconnected.empty())
      message += " rank(s) " + rank_list(unconnected) + " did not complete the connection;";
    message.pop_back();
    return message;
  }

  asio::io_context& io_;
  const TcpWorld& world_;
  std::chrono::milliseconds timeout_;
  Clock::time_point deadline_;
  uint64_t job_hash_;
  int64_t generation_ = 0;
  tcp::acceptor acceptor_;
  std::vector<std::unique_ptr<Socket>> peers_;
  std::vector<bool> claimed_;
  std::vector<std::shared_ptr<Link>> links_;
  int connected_ = 0;
  std::string failure_;
  bool finished_ = false;
};

}  // namespace

std::string address_key(const std::string& job_id, int64_t generation, int rank) {
  return "tern/" + job_id + "/tcp/" + std::to_string(generation) + "/address/" + std::to_string(rank);
}

std::vector<std::unique_ptr<Socket>> connect_mesh(asio::io_context& io, const TcpWorld& world, Store& store,
                                                  std::chrono::milliseconds timeout) {
  MeshSetup setup(io, world, timeout);
  return setup.run(store);
}

}  // namespace tern::net
