from twisted.application.service import ServiceMaker

socksvc = ServiceMaker(
    "socksvc", "socksvc.tap", "Classic socket services: echo, greeting, reverse, UDP echo, chat.", "socksvc"
)
