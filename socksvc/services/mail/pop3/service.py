"""
The pop3 service type: POP3 (RFC 1939, with STLS from RFC 2595) over the
Maildir the smtp service files into, so poplib and any mail client read, and
delete, what SMTP filed. See docs/mail.md.

The protocol is L{socksvc.services.mail.pop3.protocol}, settings and state
L{socksvc.services.mail.pop3.state}.
"""

from __future__ import annotations

from twisted.internet.protocol import ServerFactory

from socksvc.core.protocols import ServiceFactory
from socksvc.core.service import ServiceType
from socksvc.services.mail.pop3.protocol import protocol_class
from socksvc.services.mail.pop3.state import Pop3Context, Pop3Settings, Pop3State


def make_factory(context: Pop3Context) -> ServerFactory:
    # protocol_class() imports twisted.mail.pop3: built with the factory, once the reactor is installed.
    return ServiceFactory(context, protocol_class())


SERVICE_TYPE: ServiceType[Pop3Settings, Pop3State] = ServiceType(
    name="pop3",
    settings=Pop3Settings,
    doc="POP3 over the Maildir the smtp service files into",
    make_state=Pop3State,
    stream=make_factory,
    one_process=True,  # its mailbox locks (RFC 1939: one session per mailbox) are this process's
)
