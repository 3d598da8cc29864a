"""
Mail: an SMTP sink that files into Maildir (L{socksvc.services.mail.smtp}),
POP3 to read it back (L{socksvc.services.mail.pop3}), and what they share:
the Maildir (L{socksvc.services.mail.maildir}), the users file
(L{socksvc.services.mail.users}) and TLS files (L{socksvc.services.mail.tls}),
and durability: the fsyncs are done by a child process spoken to over AMP
(L{socksvc.services.mail.durable}, L{socksvc.services.mail.syncer}).

twisted.mail.smtp and twisted.mail.pop3 import C{twisted.internet.reactor}
at module level. twistd installs its reactor after importing the plugin, so
no module here imports them at module level: the protocol classes are
composed (L{socksvc.services.mail.esmtp.protocol_class},
L{socksvc.services.mail.pop3server.protocol_class}) when a listener's
factory is first built, once the reactor is installed. See docs/mail.md.
"""
