// The cell's connection loop: a pool of worker threads sharing one epoll
// set. Each connection is armed one-shot, so exactly one worker services it
// at a time and connections need no locks of their own.
#ifndef KEYCELL_CELL_SERVER_H
#define KEYCELL_CELL_SERVER_H

#include <functional>
#include <mutex>
#include <unordered_set>

#include "base/status.h"
#include "base/unique_fd.h"
#include "cell/dispatcher.h"

namespace kc::cell {

class Server {
 public:
  explicit Server(Dispatcher &dispatcher);
  Server(const Server &) = delete;
  Server &operator=(const Server &) = delete;
  ~Server();

  Status Init();

  // Serves requests arriving on the stream socket |fd|, whose frames are
  // delimited as |framing| specifies.
  Status AddConnection(UniqueFd fd,
                       protocol::Framing framing = protocol::Framing::kPlain);

  // Calls |on_ready| on a worker whenever |fd| is readable or hung up; it
  // runs on one worker at a time. |fd| stays owned by the caller.
  Status Watch(int fd, std::function<void()> on_ready);

  // Runs |workers| threads, the caller's included, forever.
  [[noreturn]] void Run(unsigned workers);

  size_t connection_count() const;

 private:
  struct Connection;
  struct Watcher;

  void WorkerLoop();
  // Returns false when the connection must be closed.
  bool Service(Connection &connection, uint32_t events);
  // Handles the first complete request in the input. Returns false when the
  // input contains no complete request.
  bool HandleOne(Connection &connection);
  bool HandleOneSizePrefixed(Connection &connection);
  bool ReadAvailable(Connection &connection);
  bool Flush(Connection &connection);
  void Rearm(Connection &connection);
  void Close(Connection *connection);

  Dispatcher &dispatcher_;
  UniqueFd epoll_;
  mutable std::mutex mutex_;
  std::unordered_set<Connection *> connections_;
};

}  // namespace kc::cell

#endif  // KEYCELL_CELL_SERVER_H
