from twisted.application.reactors import Reactor

socksvc = Reactor(
    "socksvc", "socksvc.daemon.reactor", "epoll with a lean read dispatch (the default for twistd socksvc)"
)
