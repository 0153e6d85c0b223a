"""opsdb.pg"""
