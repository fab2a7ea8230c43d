#include "comm/tcp/tcp_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "tests/comm/tcp/tcp_test_support.h"

namespace tern {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::RawConnection;

std::string length_prefixed(const std::string& body) {
  std::string out;
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(body.size() >> (8 * i)));
  out.append(body);
  return out;
}

TEST(TcpStore, GetReturnsWhatSetStored) {
  TcpStoreServer server;
  auto store = connect_tcp_store(server.address(), seconds(5));
  store->set("alpha", "one");
  store->set("binary", std::string("a\0b", 3));
  store->set("empty", "");
  EXPECT_EQ(store->get("alpha", seconds(1)), "one");
  EXPECT_EQ(store->get("binary", seconds(1)), std::string("a\0b", 3));
  EXPECT_EQ(store->get("empty", seconds(1)), "");
  store->set("alpha", "two");
  EXPECT_EQ(store->get("alpha", seconds(1)), "two");
}

TEST(TcpStore, GetWaitsForAKeyAnotherClientSetsLater) {
  TcpStoreServer server;
  auto waiter = connect_tcp_store(server.address(), seconds(5));
  std::thread setter([&] {
    auto other = connect_tcp_store(server.address(), seconds(5));
    std::this_thread::sleep_for(milliseconds(200));  // so that the get is already parked
    other->set("late", "here");
  });
  EXPECT_EQ(waiter->get("late", seconds(10)), "here");
  setter.join();
}

TEST(TcpStore, GetOfAKeyNeverSetTimesOutNamingTheKey) {
  TcpStoreServer server;
  auto store = connect_tcp_store(server.address(), seconds(5));
  try {
    store->get("missing/key", milliseconds(100));
    FAIL() << "expected a timeout";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("missing/key"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
  // The client is still usable after a timeout.
  store->set("missing/key", "now");
  EXPECT_EQ(store->get("missing/key", milliseconds(0)), "now");
}

TEST(TcpStore, AddCountsEveryIncrementOfManyClients) {
  TcpStoreServer server;
  constexpr int kClients = 4, kAdds = 50;
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&] {
      auto store = connect_tcp_store(server.address(), seconds(5));
      for (int i = 0; i < kAdds; ++i) store->add("counter", 1);
    });
  }
  for (auto& t : threads) t.join();
  auto store = connect_tcp_store(server.address(), seconds(5));
  EXPECT_EQ(store->add("counter", 0), kClients * kAdds);
  EXPECT_EQ(store->get("counter", seconds(1)), std::to_string(kClients * kAdds));
  EXPECT_EQ(store->add("counter", -5), kClients * kAdds - 5);
}

TEST(TcpStore, AddWakesAWaitingGet) {
  TcpStoreServer server;
  auto waiter = connect_tcp_store(server.address(), seconds(5));
  std::thread adder([&] {
    auto other = connect_tcp_store(server.address(), seconds(5));
    std::this_thread::sleep_for(milliseconds(100));
    other->add("arrivals", 3);
  });
  EXPECT_EQ(waiter->get("arrivals", seconds(10)), "3");
  adder.join();
}

TEST(TcpStore, OneClientIsSafeToShareBetweenThreads) {
  TcpStoreServer server;
  auto store = connect_tcp_store(server.address(), seconds(5));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const std::string key = std::to_string(t * 100 + i);
        store->set(key, key);
        EXPECT_EQ(store->get(key, seconds(1)), key);
        store->add("total", 1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(store->add("total", 0), 100);
}

TEST(TcpStore, AGetWaitingOnASharedClientDoesNotHoldUpItsOtherCallers) {
  // Ranks that are threads may share one client: rank 1 waits for rank 0's key while rank 0 sets it.
  TcpStoreServer server;
  auto store = connect_tcp_store(server.address(), seconds(5));
  std::string got;
  std::thread waiter([&] { got = store->get("from_rank_0", seconds(10)); });
  std::this_thread::sleep_for(milliseconds(100));
  store->set("from_rank_0", "address");
  waiter.join();
  EXPECT_EQ(got, "address");
}

TEST(TcpStore, AddToANonIntegerValueIsAnErrorNamingTheKey) {
  TcpStoreServer server;
  auto store = connect_tcp_store(server.address(), seconds(5));
  store->set("word", "hello");
  try {
    store->add("word", 1);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'word'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(store->get("word", seconds(1)), "hello");
}

TEST(TcpStore, MalformedRequestsCloseOnlyTheirOwnConnection) {
  TcpStoreServer server;
  auto before = connect_tcp_store(server.address(), seconds(5));
  before->set("key", "value");

  RawConnection huge(server.address());
  huge.write(std::string("\xff\xff\xff\xff", 4));  // a 4 GB request
  EXPECT_TRUE(huge.closed_by_peer());

  RawConnection bad_op(server.address());
  bad_op.write(length_prefixed(std::string("\x09\x01\x00\x00\x00k", 6)));
  EXPECT_TRUE(bad_op.closed_by_peer());

  RawConnection short_key(server.address());
  short_key.write(length_prefixed(std::string("\x02\xff\x00\x00\x00k", 6)));  // key longer than the body
  EXPECT_TRUE(short_key.closed_by_peer());

  RawConnection http(server.address());
  http.write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");  // a length prefix of ~1.2 GB
  EXPECT_TRUE(http.closed_by_peer());

  EXPECT_EQ(before->get("key", seconds(1)), "value");
  auto after = connect_tcp_store(server.address(), seconds(5));
  EXPECT_EQ(after->get("key", seconds(1)), "value");
}

TEST(TcpStore, ClientWaitsForAServerThatStartsLater) {
  uint16_t port = 0;
  {
    TcpStoreServer probe;  // finds a free port, then frees it
    port = probe.port();
  }
  std::unique_ptr<TcpStoreServer> server;
  std::thread starter([&] {
    std::this_thread::sleep_for(milliseconds(300));
    server = std::make_unique<TcpStoreServer>("127.0.0.1", port);
  });
  auto store = connect_tcp_store("127.0.0.1:" + std::to_string(port), seconds(10));
  starter.join();
  store->set("k", "v");
  EXPECT_EQ(store->get("k", seconds(1)), "v");
}

TEST(TcpStore, ConnectingWithNoServerFailsAtTheTimeout) {
  uint16_t port = 0;
  {
    TcpStoreServer probe;
    port = probe.port();
  }
  const std::string address = "127.0.0.1:" + std::to_string(port);
  try {
    connect_tcp_store(address, milliseconds(300));
    FAIL() << "expected a connection failure";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find(address), std::string::npos) << e.what();
  }
}

TEST(TcpStore, MalformedAddressIsAnError) {
  EXPECT_THROW(connect_tcp_store("no-port", seconds(1)), Error);
  EXPECT_THROW(connect_tcp_store("127.0.0.1:99999", seconds(1)), Error);
  EXPECT_THROW(connect_tcp_store("127.0.0.1:", seconds(1)), Error);
}

TEST(TcpStore, AWaitingGetFailsPromptlyWhenTheServerGoesAway) {
  auto server = std::make_unique<TcpStoreServer>();
  auto store = connect_tcp_store(server->address(), seconds(5));
  std::atomic<bool> failed{false};
  std::string message;
  std::thread waiter([&] {
    try {
      store->get("never", seconds(20));
    } catch (const CommError& e) {
      message = e.what();
      failed = true;
    }
  });
  std::this_thread::sleep_for(milliseconds(200));
  server.reset();
  waiter.join();  // a hang here would be the bug: the get must not wait out its 20 s
  EXPECT_TRUE(failed);
  EXPECT_NE(message.find("never"), std::string::npos) << message;
}

}  // namespace
}  // namespace tern
