"""
The pop3 service: twisted.mail's POP3 over the Maildir the smtp service
files into (L{socksvc.services.mail.pop3.service}).
"""
