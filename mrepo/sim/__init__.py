"""mrepo.sim"""
