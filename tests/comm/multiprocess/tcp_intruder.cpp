// An intruder for the tcp backend's fault test: started beside the ranks of a real job (it reads
// the job's TERN_STORE_ADDR), it waits until rank 1 publishes its address, then connects twice
// while the job is setting up: once sending garbage, once sending a well-formed handshake of
// another job. The ranks must reject both and run their collectives as if nothing happened.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "comm/tcp/frame.h"
#include "comm/tcp/host_port.h"
#include "comm/tcp/tcp_mesh.h"
#include "comm/tcp/tcp_store.h"

namespace {

int connect_to(const std::string& address) {
  const auto colon = address.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    std::perror("tern_tcp_intruder: connect");
    std::exit(1);
  }
  return fd;
}

void send_all(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return;  // the rank may hang up first: that is a rejection too
    p += k;
    n -= static_cast<size_t>(k);
  }
}

}  // namespace

int main() {
  const char* store_addr = std::getenv("TERN_STORE_ADDR");
  const char* job = std::getenv("TERN_JOB_ID");
  if (!store_addr || !job) {
    std::fprintf(stderr, "tern_tcp_intruder: run me beside a ternrun job (TERN_STORE_ADDR, TERN_JOB_ID)\n");
    return 2;
  }
  try {
    auto store = tern::connect_tcp_store(store_addr, std::chrono::seconds(30));
    // Rank 1's first (and only) tcp world of this job.
    const std::string target = store->get(tern::net::address_key(job, 1, 1), std::chrono::seconds(30));

    const int garbage = connect_to(target);
    const char junk[] = "GET / HTTP/1.0\r\n\r\nnot a tern frame at all........................";
    send_all(garbage, junk, sizeof junk);

    const int impostor = connect_to(target);
    const std::string other_job = "someone-elses-job";
    tern::net::FrameHeader h;
    h.kind = static_cast<uint16_t>(tern::net::FrameKind::handshake);
    h.job_hash = tern::net::job_hash(other_job);
    h.context = 3;  // world size
    h.tag = 2;      // claims to be rank 2
    h.payload_bytes = other_job.size();
    const auto bytes = tern::net::encode_header(h);
    send_all(impostor, bytes.data(), bytes.size());
    send_all(impostor, other_job.data(), other_job.size());
    send_all(impostor, tern::net::kFramePadding, tern::net::frame_padding(other_job.size()));
    sleep(1);  // let the rank read and reject before we hang up
    close(garbage);
    close(impostor);
    std::printf("tern_tcp_intruder: sent garbage and another job's handshake to rank 1 at %s\n", target.c_str());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tern_tcp_intruder: %s\n", e.what());
    return 1;
  }
}
