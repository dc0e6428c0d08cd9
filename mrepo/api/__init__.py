"""mrepo.api"""
