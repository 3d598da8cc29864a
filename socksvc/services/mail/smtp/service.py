"""
The smtp service type: an ESMTP sink on twisted.mail that files every
message it accepts into Maildir and never relays. See docs/mail.md.

The protocol is L{socksvc.services.mail.smtp.protocol}, settings and state
L{socksvc.services.mail.smtp.state}.
"""

from __future__ import annotations

from twisted.internet.protocol import ServerFactory

from socksvc.core.protocols import ServiceFactory
from socksvc.core.service import ServiceType
from socksvc.services.mail.smtp.protocol import protocol_class
from socksvc.services.mail.smtp.state import SmtpContext, SmtpSettings, SmtpState


def make_factory(context: SmtpContext) -> ServerFactory:
    # protocol_class() imports twisted.mail.smtp: built with the factory, once the reactor is installed.
    return ServiceFactory(context, protocol_class())


SERVICE_TYPE: ServiceType[SmtpSettings, SmtpState] = ServiceType(
    name="smtp",
    settings=SmtpSettings,
    doc="an SMTP sink that files mail into Maildir (never relays)",
    make_state=SmtpState,
    stream=make_factory,
    one_process=True,  # announce reaches chat through this process's notice bus; tmp/ is cleaned at start
)
