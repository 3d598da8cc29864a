"""
The service-author API: ServiceType and ServiceContext, the policy layer,
stream base protocols, the datagram guard, write-through.
"""
