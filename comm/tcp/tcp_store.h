// The rendezvous store over TCP: ternrun runs a TcpStoreServer; every rank of a tcp job reaches
// it through a TcpStoreClient at TERN_STORE_ADDR to publish and find each other's addresses.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "comm/store.h"

namespace tern {

class TcpStoreServer {
 public:
  // Listens on host:port (port 0: any free port) and serves on its own thread until destroyed.
  explicit TcpStoreServer(const std::string& host = "127.0.0.1", uint16_t port = 0);
  ~TcpStoreServer();
  TcpStoreServer(const TcpStoreServer&) = delete;
  TcpStoreServer& operator=(const TcpStoreServer&) = delete;
  uint16_t port() const;
  std::string address() const;  // "host:port", what TERN_STORE_ADDR carries

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Connects to "host:port", retrying until `timeout` (the server may start after the client).
std::shared_ptr<Store> connect_tcp_store(const std::string& address, std::chrono::milliseconds timeout);

}  // namespace tern
