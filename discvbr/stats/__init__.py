"""Voxel-wise statistics of relaxation-time maps across subjects (tmp)."""
from discvbr.stats.voxelwise import voxel_by_group, voxel_by_time, voxel_by_variable, voxel_by_voxel
