"""opsdb.stream"""
