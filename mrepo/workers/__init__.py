"""mrepo.workers"""
