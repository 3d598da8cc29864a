from twisted.application.reactors import Reactor

socksvc = Reactor("socksvc", "socksvc.reactor", "epoll with a lean read dispatch (the default for twistd socksvc)")
