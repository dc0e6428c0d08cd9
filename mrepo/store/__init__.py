"""mrepo.store"""
